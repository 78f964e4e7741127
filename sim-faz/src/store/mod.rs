//! The log store: SQLite (bundled) in WAL mode under `--data-dir`.
//!
//! Durability: `journal_mode=WAL` with `synchronous=FULL`. In WAL mode `NORMAL` only syncs the
//! WAL at checkpoints: a committed transaction survives a process `kill -9` (the bytes are in the
//! page cache) but not a power loss or kernel crash, and an acknowledgement promises the log is
//! stored. `FULL` fsyncs the WAL at every commit, so an acked batch survives both. The cost is
//! one fsync per committed batch, which batching amortises (see `benches/ingest.rs`).
//!
//! Exactly once: each sender's last stored sequence number lives in table `seqs` and is updated
//! in the same transaction as the batch's rows, so after any crash the rows and the sequence agree;
//! lines at or below the stored sequence are dropped as duplicates.
//!
//! One job a file: `parse.rs` turns FortiOS lines into [`Row`]s, `schema.rs` holds the table
//! layout and connection settings, `writer.rs` the writer thread (exactly once, group commit,
//! sealing), `search.rs` the reads, `retention.rs` the deletion of old logs and `kv.rs` the
//! key/value table. This file opens the store and holds what they share.

mod kv;
mod parse;
mod retention;
mod schema;
mod search;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use rusqlite::{params, Connection};

pub use kv::KvUpdates;
pub use parse::{
    classify, field_of, for_each_pair, logtype_code, logtype_name, parse_row, Pair, Row, LOGTYPES,
};
pub use schema::register_functions;
pub use search::{Found, SearchSpec};
pub use writer::{Chain, Pending, STALE_CHAIN};

use schema::{index_sql, open_conn, seg_name, segment_sql, Seg, COLS, SCHEMA};
use writer::{Job, Writer};

use crate::filter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("log store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("log store: {0}")]
    Filter(#[from] filter::FilterError),
    #[error("log store {path}: {msg}")]
    Open { path: String, msg: String },
    #[error("{0}")]
    Writer(String),
}

/// Counters of the store.
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub inserted: AtomicU64,
    pub duplicates: AtomicU64,
    /// Committed transactions (one per group of batches).
    pub commits: AtomicU64,
    /// Batches committed (a group commit holds one or more).
    pub batches: AtomicU64,
    /// Batches that started above the sender's last stored sequence + 1.
    pub seq_gaps: AtomicU64,
    /// Log segments created.
    pub segments_created: AtomicU64,
    /// Log segments dropped whole by retention.
    pub segments_dropped: AtomicU64,
    /// Log segments sealed (indexes built).
    pub segments_sealed: AtomicU64,
}

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Rows per log segment (table with its own indexes); a full segment is closed and a new
    /// one opened. Small segments keep the index pages one commit touches few and cached.
    pub segment_rows: u64,
    /// Most rows in one group commit.
    pub group_rows: usize,
    /// SQLite page cache of the writer connection, KiB. The writer fills the newest segment
    /// and builds a segment's indexes when it is sealed: its cache needs the pages one commit
    /// touches, not the whole segment (issue 15: at 256 MiB a connection the cache grew with
    /// every row stored, ~0.9 KiB a proxied request, until it held 256 MiB).
    pub writer_cache_kib: u32,
    /// SQLite page cache of each of the [`READERS`] reader connections, KiB.
    pub reader_cache_kib: u32,
    /// SQLite `mmap_size` of the reader connections, bytes (0: no map). Mapped pages count in
    /// the process's RSS once read.
    pub reader_mmap_bytes: u64,
    /// SQLite `mmap_size` of the writer, bytes. Default 0: sealing a segment reads all of it,
    /// so through a map the resident pages grew with the store.
    pub writer_mmap_bytes: u64,
    /// Longest time lines committed as [`Durability::Unacknowledged`] (syslog) may wait for
    /// the WAL's fsync ([`DEFAULT_SYNC_WINDOW`]); zero fsyncs every commit.
    pub sync_window: std::time::Duration,
}

/// Default [`StoreOptions::sync_window`].
pub const DEFAULT_SYNC_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// How a batch of lines must be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The sender is told the lines are stored once they are committed (the log channel's
    /// acknowledgement): the commit fsyncs the WAL (`synchronous=FULL`), so they survive a
    /// power loss.
    #[default]
    Acknowledged,
    /// Nobody is told (syslog has no acknowledgement): committed without waiting for the
    /// fsync, which follows within [`StoreOptions::sync_window`] (with the next acknowledged
    /// commit, the first commit after the window, or a checkpoint when the writer is idle).
    /// Once committed the lines survive a crash of the process; a power loss or kernel crash
    /// loses at most the last window's.
    Unacknowledged,
}

/// Reader connections (searches, counts) beside the writer.
pub const READERS: usize = 3;
/// Default [`StoreOptions::writer_cache_kib`].
pub const DEFAULT_WRITER_CACHE_KIB: u32 = 32 * 1024;
/// Default [`StoreOptions::reader_cache_kib`].
pub const DEFAULT_READER_CACHE_KIB: u32 = 16 * 1024;
/// Default [`StoreOptions::reader_mmap_bytes`].
pub const DEFAULT_READER_MMAP_BYTES: u64 = 64 * 1024 * 1024;

impl Default for StoreOptions {
    /// [`DEFAULT_SEGMENT_ROWS`], unless the environment sets `FORTILAB_FAZ_SEGMENT_ROWS` (tests
    /// use small segments to cross segment boundaries).
    fn default() -> Self {
        let segment_rows = std::env::var("FORTILAB_FAZ_SEGMENT_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_SEGMENT_ROWS);
        StoreOptions {
            segment_rows,
            group_rows: 50_000,
            writer_cache_kib: DEFAULT_WRITER_CACHE_KIB,
            reader_cache_kib: DEFAULT_READER_CACHE_KIB,
            reader_mmap_bytes: DEFAULT_READER_MMAP_BYTES,
            writer_mmap_bytes: 0,
            sync_window: DEFAULT_SYNC_WINDOW,
        }
    }
}

/// Default rows per segment.
pub const DEFAULT_SEGMENT_ROWS: u64 = 200_000;

/// State shared by the callers, the writer thread and the readers.
struct Shared {
    /// Log segments, oldest first.
    segs: RwLock<Vec<Seg>>,
    /// Last sequence per sender accepted (queued for the writer, in queue order). Locked
    /// before `committed` when both are.
    accepted: Mutex<HashMap<String, u64>>,
    /// Last sequence per sender committed.
    committed: Mutex<HashMap<String, u64>>,
    counters: Arc<StoreCounters>,
}

/// The durable log store.
///
/// One writer thread owns the write connection. [`Store::commit`] drops duplicates and runs
/// the caller's hook in arrival order, queues the batch and waits; the writer takes everything
/// queued (up to [`StoreOptions::group_rows`]) into one transaction, commits it (one WAL fsync
/// for the group) and only then releases the callers, whose acknowledgements therefore cover
/// committed rows only. Logs live in segment tables (`logs_000001`, ...) of
/// [`StoreOptions::segment_rows`] rows; searches fan out over them newest first.
pub struct Store {
    path: PathBuf,
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicU64,
    pub counters: Arc<StoreCounters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has committed what is queued.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `dir/logs.db`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// [`Store::open`] with explicit tuning.
    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            msg: e.to_string(),
        })?;
        let opts = StoreOptions {
            segment_rows: opts.segment_rows.max(1),
            group_rows: opts.group_rows.max(1),
            ..opts
        };
        let path = dir.join("logs.db");
        let conn = open_conn(&path, opts.writer_cache_kib, opts.writer_mmap_bytes)?;
        conn.execute_batch(SCHEMA)?;
        // A store from before segments has one `logs` table (raw line inline): it is copied
        // into segment 0, once.
        let legacy: bool = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='logs'",
            [],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if legacy {
            let seg = Seg {
                n: 0,
                sealed: false,
            };
            let cols = COLS;
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {} INSERT INTO {}({cols}) SELECT {cols} FROM logs; INSERT INTO {}(id, raw) SELECT id, raw FROM logs; DROP TABLE logs; {} COMMIT;",
                segment_sql(seg),
                seg.logs_table(),
                seg.raws_table(),
                index_sql(seg)
            ))?;
        }
        let mut nums: Vec<u32> = {
            let mut st = conn.prepare(
                "SELECT name FROM sqlite_schema WHERE type='table' AND name GLOB 'logs_[0-9]*'",
            )?;
            let names = st.query_map([], |r| r.get::<_, String>(0))?;
            let mut v = Vec::new();
            for n in names {
                if let Some(k) = n?.strip_prefix("logs_").and_then(|k| k.parse().ok()) {
                    v.push(k);
                }
            }
            v
        };
        nums.sort_unstable();
        let mut committed = HashMap::new();
        {
            let mut st = conn.prepare("SELECT dev, last FROM seqs")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for r in rows {
                let (d, l) = r?;
                committed.insert(d, l as u64);
            }
        }
        let mut next_id = 1i64;
        let mut segs = Vec::new();
        for &n in &nums {
            let sealed: bool = conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type='index' AND name=?1",
                params![format!("{}_srcip", seg_name(n))],
                |r| r.get::<_, i64>(0),
            )? > 0;
            segs.push(Seg { n, sealed });
            let max: Option<i64> =
                conn.query_row(&format!("SELECT max(id) FROM {}", seg_name(n)), [], |r| {
                    r.get(0)
                })?;
            if let Some(m) = max {
                next_id = next_id.max(m + 1);
            }
        }
        let counters = Arc::new(StoreCounters::default());
        let shared = Arc::new(Shared {
            segs: RwLock::new(segs.clone()),
            accepted: Mutex::new(committed.clone()),
            committed: Mutex::new(committed),
            counters: counters.clone(),
        });
        let (reader_cache, reader_mmap) = (opts.reader_cache_kib, opts.reader_mmap_bytes);
        let mut w = Writer {
            conn,
            shared: shared.clone(),
            opts,
            hot: 0,
            hot_rows: 0,
            next_id,
            unsynced_since: None,
        };
        match nums.last() {
            // The newest segment keeps filling; a legacy `logs` table (segment 0) is closed.
            Some(&n) if n > 0 => {
                w.hot = n;
                w.hot_rows =
                    w.conn
                        .query_row(&format!("SELECT count(*) FROM {}", seg_name(n)), [], |r| {
                            r.get::<_, i64>(0)
                        })? as u64;
            }
            _ => {
                let n = nums.last().map(|n| n + 1).unwrap_or(1);
                w.create_segment(n)?;
                shared
                    .segs
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Seg { n, sealed: false });
            }
        }
        // Full segments left unsealed by a crash are sealed now.
        for seg in segs {
            if !seg.sealed && seg.n != w.hot {
                w.seal(seg.n)?;
            }
        }
        let _ = w
            .conn
            .execute_batch("PRAGMA analysis_limit=1000; PRAGMA optimize=0x10002;");
        let mut readers = Vec::new();
        for _ in 0..READERS {
            readers.push(Mutex::new(open_conn(&path, reader_cache, reader_mmap)?));
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("faz-store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                msg: format!("writer thread: {e}"),
            })?;
        Ok(Store {
            path,
            shared,
            jobs: Some(tx),
            thread: Some(thread),
            readers,
            next_reader: AtomicU64::new(0),
            counters,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A free reader connection, the first ones preferred (their page caches stay warm).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(g) = r.try_lock() {
                return g;
            }
        }
        let n = self.next_reader.fetch_add(1, Ordering::Relaxed) as usize % self.readers.len();
        self.readers[n].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Segments, newest first when `desc`.
    fn segments(&self, desc: bool) -> Vec<Seg> {
        let mut v = self
            .shared
            .segs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if desc {
            v.reverse();
        }
        v
    }

    /// Number of log segments.
    pub fn segment_count(&self) -> usize {
        self.shared
            .segs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(|| StoreError::Writer("log store writer stopped".into()))
    }

    /// Runs `f` on the writer thread, in queue order, and waits for its result.
    fn on_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Job::Call(Box::new(move |w: &mut Writer| {
            let _ = tx.send(f(w));
        })))?;
        rx.recv()
            .map_err(|_| StoreError::Writer("log store writer stopped".into()))
    }

    /// Writes a consistent copy of the store to `dir/logs.db` (a lab snapshot taken while the
    /// FortiAnalyzer runs on): `VACUUM INTO` on the writer thread, between two commits, so the
    /// copy holds whole transactions only (logs and `seqs` agree). Returns its size in bytes.
    pub fn backup_into(&self, dir: &Path) -> Result<u64, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            msg: e.to_string(),
        })?;
        let target = dir.join("logs.db");
        let t = target.clone();
        self.on_writer(move |w: &mut Writer| {
            w.conn
                .execute("VACUUM INTO ?1", params![t.display().to_string()])
                .map(|_| ())
        })??;
        Ok(std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0))
    }

    /// Refreshes the query planner's statistics.
    pub fn optimize(&self) {
        let _ = self.on_writer(|w| {
            let _ = w.conn.execute_batch("PRAGMA analysis_limit=1000; ANALYZE;");
        });
        for r in &self.readers {
            if let Ok(c) = r.lock() {
                let _ = c.execute_batch("ANALYZE sqlite_schema;");
            }
        }
    }
}
