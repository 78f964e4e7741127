//! Persistence of the EMS state: a snapshot (`ems-state.json`, one JSON document written
//! atomically: temporary file, fsync, rename, fsync of the directory) plus a journal
//! (`ems-journal.jsonl`, one [`JournalRecord`] per line, appended and fsynced).
//!
//! Why JSON files and not SQLite: the state is small (about 500 bytes per endpoint, 5 MB for
//! 10,000 endpoints), it is read once at start-up and kept in memory. A snapshot written
//! atomically can never be half-written; a journal line that was cut by a crash is the last
//! one and was never acknowledged (see below), so it is dropped on load.
//!
//! Durability ("acknowledged" = the reply was sent): every change that must survive a restart
//! (a registration, a quarantine, a release, a code use, an authorization, a deletion, a
//! quarantine's first delivery) is in the journal, fsynced, **before** its API or telemetry
//! reply leaves. One background writer does the work (group commit): a handler marks its change,
//! wakes the writer and waits until the writer has fsynced a generation at least as new as its
//! change; everything that changed meanwhile goes into the same record, so 1,000
//! registrations cost a handful of fsyncs, not 1,000 snapshot rewrites. `last_seen` alone never
//! causes a write (it is saved with the next record of that endpoint, the next snapshot and at
//! shutdown). When the journal grows past [`COMPACT_AT`] bytes the writer writes a new snapshot
//! and empties the journal; records already contained in the snapshot (generation ≤ the
//! snapshot's) are skipped on load, so a crash between the two steps is harmless.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::state::{EmsState, JournalRecord};

/// Period of the background writer when nobody waits for it.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Journal size that triggers a new snapshot.
pub const COMPACT_AT: u64 = 16 * 1024 * 1024;

/// Errors loading the state files.
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

/// The state files and what was written last.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    journal_path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Generation durably written (snapshot or journal).
    written: u64,
    journal: Option<File>,
    journal_bytes: u64,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Store {
            path: dir.join("ems-state.json"),
            journal_path: dir.join("ems-journal.jsonl"),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// Loads the snapshot and replays the journal, or a fresh state when there is neither.
    pub fn load(&self) -> Result<EmsState, StoreError> {
        let io = |p: &Path, e| StoreError::Io {
            path: p.display().to_string(),
            source: e,
        };
        let mut st = match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: self.path.display().to_string(),
                line: e.line(),
                column: e.column(),
                msg: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EmsState::new(),
            Err(e) => return Err(io(&self.path, e)),
        };
        let snapshot_gen = st.generation;
        let mut journal_bytes = 0;
        match std::fs::read(&self.journal_path) {
            Ok(bytes) => {
                journal_bytes = bytes.len() as u64;
                let complete = bytes.ends_with(b"\n");
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                // `split` yields an empty piece after the final newline.
                let n = lines.len();
                for (i, line) in lines.into_iter().enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    let last = i + 1 == n;
                    match serde_json::from_slice::<JournalRecord>(line) {
                        Ok(rec) if rec.generation <= snapshot_gen => {}
                        Ok(rec) => st.apply_record(rec),
                        // A line cut by a crash: never fsynced, so never acknowledged.
                        Err(_) if last && !complete => {
                            tracing::warn!(
                                path = %self.journal_path.display(),
                                line = i + 1,
                                "dropping the incomplete last journal line"
                            );
                        }
                        Err(e) => {
                            return Err(StoreError::Corrupt {
                                path: self.journal_path.display().to_string(),
                                line: i + 1,
                                column: e.column(),
                                msg: e.to_string(),
                            })
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&self.journal_path, e)),
        }
        st.reindex();
        let mut inner = self.inner();
        inner.written = st.generation;
        inner.journal_bytes = journal_bytes;
        Ok(st)
    }

    /// Appends one record and fsyncs it.
    pub fn append(&self, rec: &JournalRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.inner();
        if inner.journal.is_none() {
            if let Some(dir) = self.journal_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)?;
            if let Some(dir) = self.journal_path.parent() {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            inner.journal = Some(f);
        }
        let f = inner.journal.as_mut().expect("opened above");
        f.write_all(&line)?;
        f.sync_data()?;
        inner.journal_bytes += line.len() as u64;
        inner.written = inner.written.max(rec.generation);
        Ok(())
    }

    /// Whether the journal is large enough to be folded into a new snapshot.
    pub fn wants_snapshot(&self) -> bool {
        self.inner().journal_bytes >= COMPACT_AT
    }

    /// Writes a snapshot of the whole state (generation `generation`) and empties the journal.
    pub fn snapshot(&self, generation: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut inner = self.inner();
        write_atomic(&self.path, bytes)?;
        inner.written = inner.written.max(generation);
        // The snapshot holds everything the journal holds: start a new one. A crash before this
        // point leaves records the loader skips (generation ≤ the snapshot's).
        inner.journal = None;
        match std::fs::remove_file(&self.journal_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        inner.journal_bytes = 0;
        Ok(())
    }

    /// The generation durably written.
    pub fn written(&self) -> u64 {
        self.inner().written
    }
}

/// Writes a file atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SysInfo;

    fn info(uid: &str) -> SysInfo {
        SysInfo {
            fctuid: uid.into(),
            ip: "10.0.0.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn journal_replay_snapshot_and_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.load().unwrap().endpoints.is_empty());
        let mut st = EmsState::new();
        let (a, _) = st.register(&info("A"), 1);
        let (b, _) = st.register(&info("B"), 2);
        store.append(&st.take_changes().unwrap()).unwrap();
        assert!(st.take_changes().is_none(), "nothing left");
        let mut r = fortilab_core::rng::stream(1, "t");
        st.quarantine(a, "admin:admin", None, "m", &mut r, 3)
            .unwrap();
        st.delete(&[b]);
        store.append(&st.take_changes().unwrap()).unwrap();
        assert_eq!(store.written(), st.generation);

        let back = Store::new(dir.path()).load().unwrap();
        assert!(back.endpoint_by_uid("A").unwrap().quarantine.is_some());
        assert!(back.endpoint_by_uid("B").is_none());
        assert_eq!(back.generation, st.generation);
        assert_eq!(back.next_device_id, 3, "deleted ids are not reused");

        // A snapshot folds the journal in; older records (a crash before the journal was
        // emptied) are skipped, not replayed over newer state.
        let old_journal = std::fs::read(store.journal_path()).unwrap();
        st.unquarantine(a).unwrap();
        st.take_changes();
        store
            .snapshot(st.generation, &serde_json::to_vec(&st).unwrap())
            .unwrap();
        assert!(!store.journal_path().exists());
        std::fs::write(store.journal_path(), &old_journal).unwrap();
        let back = Store::new(dir.path()).load().unwrap();
        assert!(back.endpoint_by_uid("A").unwrap().quarantine.is_none());

        // A torn last line is dropped; a corrupt complete line is an error with its line.
        let mut torn = old_journal.clone();
        let mut c = EmsState::new();
        c.generation = st.generation;
        c.register(&info("C"), 4);
        let mut line = serde_json::to_vec(&c.take_changes().unwrap()).unwrap();
        torn.extend_from_slice(&line[..line.len() / 2]);
        std::fs::write(store.journal_path(), &torn).unwrap();
        let back = Store::new(dir.path()).load().unwrap();
        assert!(back.endpoint_by_uid("C").is_none());
        line.truncate(line.len() / 2);
        line.extend_from_slice(b"\n{}\n");
        std::fs::write(store.journal_path(), &line).unwrap();
        let err = Store::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains("ems-journal.jsonl:1:"), "{err}");

        std::fs::write(store.path(), "{\n  \"endpoints\": [").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("ems-state.json:2:"), "{err}");
    }

    #[test]
    fn snapshots_without_a_generation_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = EmsState::new();
        st.register(&info("A"), 1);
        let mut v = serde_json::to_value(&st).unwrap();
        v.as_object_mut().unwrap().remove("generation");
        std::fs::write(dir.path().join("ems-state.json"), v.to_string()).unwrap();
        let back = Store::new(dir.path()).load().unwrap();
        assert!(back.endpoint_by_uid("A").is_some());
    }
}
