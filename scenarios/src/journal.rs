//! The timeline on disk: every event of `fortilab up`'s merged timeline as one JSON line, in
//! rotated files `<data-dir>/timeline/timeline-NNNNNN.jsonl`, while memory keeps only a bounded
//! ring (`Timeline::with_limit`).
//!
//! Writing is off the event path: [`Journal::record`] hands the line to a writer thread through
//! a bounded queue; when the queue is full the event is counted as dropped, never waited for,
//! and the next line written is a `journal.gap` record with the count, so a reader of the
//! files sees where and how much is missing. Files rotate at `max_file_bytes`; at most
//! `max_files` are kept (the oldest is deleted, and its deletion is counted).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use serde_json::{json, Value};

/// Lines the writer thread may have queued.
pub const QUEUE: usize = 16_384;

/// Rotation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_files: usize,
}

impl Default for Limits {
    /// 32 MiB files, 16 of them: at most 512 MiB of timeline on disk.
    fn default() -> Self {
        Limits {
            max_file_bytes: 32 << 20,
            max_files: 16,
        }
    }
}

/// What the writer does after writing a line (pure; unit-tested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotate {
    Keep,
    /// Close the current file, open file `open`, delete file `delete` if any.
    To {
        open: u64,
        delete: Option<u64>,
    },
}

/// The rotation state: which file is current and how full it is.
#[derive(Debug, Clone)]
pub struct Rotation {
    limits: Limits,
    pub index: u64,
    pub size: u64,
    /// The oldest file index still on disk.
    pub oldest: u64,
}

impl Rotation {
    pub fn new(limits: Limits, first_index: u64) -> Self {
        Rotation {
            limits,
            index: first_index,
            size: 0,
            oldest: first_index,
        }
    }

    /// Accounts a written line of `n` bytes.
    pub fn wrote(&mut self, n: u64) -> Rotate {
        self.size += n;
        if self.size < self.limits.max_file_bytes {
            return Rotate::Keep;
        }
        self.index += 1;
        self.size = 0;
        let keep = self.limits.max_files.max(1) as u64;
        let delete = if self.index - self.oldest + 1 > keep {
            let d = self.oldest;
            self.oldest += 1;
            Some(d)
        } else {
            None
        };
        Rotate::To {
            open: self.index,
            delete,
        }
    }
}

/// The path of file `index` in `dir`.
pub fn file_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("timeline-{index:06}.jsonl"))
}

/// Counters of a journal.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub written: AtomicU64,
    /// Events not written because the writer was behind.
    pub dropped: AtomicU64,
    /// Files deleted by rotation.
    pub deleted_files: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The on-disk timeline.
#[derive(Clone)]
pub struct Journal {
    tx: SyncSender<String>,
    pub stats: Arc<JournalStats>,
    dir: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).finish()
    }
}

impl Journal {
    /// Opens `dir` (created 0700) and starts the writer thread. Numbering continues after the
    /// highest file already there.
    pub fn open(dir: &Path, limits: Limits) -> std::io::Result<Journal> {
        fortilab_core::secrets::create_private_dir(dir)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))?;
        let mut first = 1;
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix("timeline-")
                .and_then(|r| r.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                first = first.max(n + 1);
            }
        }
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let stats = Arc::new(JournalStats::default());
        let st = stats.clone();
        let d = dir.to_path_buf();
        let mut file = open_file(&file_path(dir, first))?;
        std::thread::Builder::new()
            .name("timeline-journal".into())
            .spawn(move || {
                let mut rot = Rotation::new(limits, first);
                let mut reported_drops = 0u64;
                while let Ok(line) = rx.recv() {
                    let mut batch = vec![line];
                    while let Ok(l) = rx.try_recv() {
                        batch.push(l);
                        if batch.len() >= 1024 {
                            break;
                        }
                    }
                    let dropped = st.dropped.load(Ordering::Relaxed);
                    if dropped > reported_drops {
                        batch.insert(
                            0,
                            json!({"kind": fortilab_core::EventKind::JournalGap.name(), "device": "fortilab",
                                   "dropped": dropped - reported_drops,
                                   "summary": format!("{} events not written (the journal was behind)", dropped - reported_drops)})
                            .to_string(),
                        );
                        reported_drops = dropped;
                    }
                    for line in batch {
                        let ok = file
                            .write_all(line.as_bytes())
                            .and_then(|_| file.write_all(b"\n"));
                        if ok.is_err() {
                            st.write_errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        st.written.fetch_add(1, Ordering::Relaxed);
                        if let Rotate::To { open, delete } = rot.wrote(line.len() as u64 + 1) {
                            let _ = file.flush();
                            match open_file(&file_path(&d, open)) {
                                Ok(f) => file = f,
                                Err(_) => {
                                    st.write_errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            if let Some(old) = delete {
                                if std::fs::remove_file(file_path(&d, old)).is_ok() {
                                    st.deleted_files.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    let _ = file.flush();
                }
                let _ = file.flush();
            })?;
        Ok(Journal {
            tx,
            stats,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues an event for the files; never blocks (a full queue counts a drop).
    pub fn record(&self, ev: &Value) {
        match self.tx.try_send(ev.to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn report(&self) -> Value {
        let s = &self.stats;
        json!({"dir": self.dir.display().to_string(),
               "written": s.written.load(Ordering::Relaxed),
               "dropped": s.dropped.load(Ordering::Relaxed),
               "deleted_files": s.deleted_files.load(Ordering::Relaxed),
               "write_errors": s.write_errors.load(Ordering::Relaxed)})
    }
}

fn open_file(p: &Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(p)?;
    Ok(std::io::BufWriter::with_capacity(256 * 1024, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_opens_the_next_file_and_keeps_at_most_max_files() {
        let mut r = Rotation::new(
            Limits {
                max_file_bytes: 100,
                max_files: 3,
            },
            1,
        );
        assert_eq!(r.wrote(60), Rotate::Keep);
        assert_eq!(
            r.wrote(60),
            Rotate::To {
                open: 2,
                delete: None
            }
        );
        assert_eq!(
            r.wrote(100),
            Rotate::To {
                open: 3,
                delete: None
            }
        );
        assert_eq!(
            r.wrote(100),
            Rotate::To {
                open: 4,
                delete: Some(1)
            }
        );
        assert_eq!(
            r.wrote(150),
            Rotate::To {
                open: 5,
                delete: Some(2)
            }
        );
        assert_eq!((r.oldest, r.index), (3, 5));
    }

    #[test]
    fn every_event_reaches_the_files_in_order_across_rotations() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(
            d.path(),
            Limits {
                max_file_bytes: 4096,
                max_files: 1000,
            },
        )
        .unwrap();
        let n = 2000;
        for i in 0..n {
            // Never more than the queue at once: wait for the writer now and then.
            if i % 1000 == 999 {
                while j.stats.written.load(Ordering::Relaxed) < i - 10 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            j.record(&json!({"n": i, "kind": "x"}));
        }
        while j.stats.written.load(Ordering::Relaxed) < n {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut files: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() > 5, "{}", files.len());
        let mut next = 0;
        for f in files {
            for line in std::fs::read_to_string(f).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["n"], next);
                next += 1;
            }
        }
        assert_eq!(next, n);
        assert_eq!(j.stats.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_counts_drops_and_the_files_say_so() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path(), Limits::default()).unwrap();
        // Far more than the queue in one burst: some are dropped, and counted.
        let n = QUEUE as u64 * 4;
        for i in 0..n {
            j.record(&json!({"n": i}));
        }
        let dropped = j.stats.dropped.load(Ordering::Relaxed);
        // One more event after the burst carries the gap record out.
        std::thread::sleep(std::time::Duration::from_millis(200));
        j.record(&json!({"n": "last"}));
        let t0 = std::time::Instant::now();
        let text = loop {
            let text = std::fs::read_to_string(file_path(d.path(), 1)).unwrap();
            if text.contains("\"last\"") {
                break text;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "writer stuck"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let written = text.lines().filter(|l| l.contains("\"n\"")).count() as u64;
        assert_eq!(written + dropped, n + 1);
        if dropped > 0 {
            let gaps: u64 = text
                .lines()
                .filter(|l| l.contains("journal.gap"))
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["dropped"]
                        .as_u64()
                        .unwrap()
                })
                .sum();
            assert_eq!(gaps, dropped);
        }
    }
}
