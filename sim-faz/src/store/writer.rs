//! The writer thread and the queue to it: exactly-once admission of a sender's batch
//! ([`Store::submit`]: duplicates dropped by sequence, the caller's hook run in arrival order),
//! group commit (everything queued, one transaction, one WAL fsync, then the acknowledgements),
//! the rewind after a failed commit, and sealing a full segment (its indexes) after the acks.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::kv::KvUpdates;
use super::parse::Row;
use super::schema::{index_sql, segment_sql, Seg, COLS, NCOLS};
use super::{Durability, Shared, Store, StoreError, StoreOptions};
use crate::filter::ip_value;

fn ip_col(s: &Option<String>) -> Value {
    match s {
        Some(t) => match t.parse::<IpAddr>() {
            Ok(ip) => ip_value(ip),
            Err(_) => Value::Text(t.clone()),
        },
        None => Value::Null,
    }
}

fn insert_sql(table: &str, rows: usize) -> String {
    let mut s = format!("INSERT INTO {table}({COLS}) VALUES");
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..NCOLS {
            if c > 0 {
                s.push(',');
            }
            s.push('?');
        }
        s.push(')');
    }
    s
}

fn bind_row(
    st: &mut rusqlite::CachedStatement<'_>,
    i: &mut usize,
    id: i64,
    dev: &str,
    rtime: i64,
    r: &Row,
) -> rusqlite::Result<()> {
    macro_rules! b {
        ($v:expr) => {{
            st.raw_bind_parameter(*i, $v)?;
            *i += 1;
        }};
    }
    b!(id);
    b!(dev);
    b!(if r.seq > 0 { Some(r.seq as i64) } else { None });
    b!(rtime);
    b!(r.ltype);
    b!(&r.log_type);
    b!(&r.subtype);
    b!(&r.logid);
    b!(&r.level);
    b!(ip_col(&r.srcip));
    b!(ip_col(&r.dstip));
    b!(r.srcport);
    b!(r.dstport);
    b!(&r.hostname);
    b!(&r.url);
    b!(&r.action);
    b!(r.policyid);
    b!(&r.devid);
    b!(&r.devname);
    b!(&r.vd);
    b!(r.etime);
    b!(&r.catdesc);
    b!(r.cat);
    b!(&r.user);
    Ok(())
}

/// One batch waiting for the writer.
pub(super) struct Batch {
    pub(super) dev: String,
    pub(super) rows: Vec<Row>,
    pub(super) rtime: i64,
    /// The sender's last sequence after this batch (sequenced senders only).
    pub(super) last: Option<u64>,
    pub(super) kv: KvUpdates,
    pub(super) durability: Durability,
    /// Committed only if the key still holds the expected value (see [`Chain`]).
    pub(super) chain: Option<Chain>,
    pub(super) done: mpsc::SyncSender<Result<(), String>>,
}

/// A batch that continues a chain: it is committed only if key `key` of the key/value table
/// holds `expect` when its turn comes (the batch before it in the chain was committed), and
/// its commit sets `key` to `next`. Otherwise it is refused as a whole ([`STALE_CHAIN`]), with
/// nothing written, and the batches of the group around it go on. The raw log indexer keeps
/// its read position this way: after a failed commit no later batch can be committed past the
/// lines that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub key: String,
    pub expect: Option<String>,
    pub next: String,
}

/// The error of a batch refused because its [`Chain`] did not continue.
pub const STALE_CHAIN: &str =
    "log store: chained batch refused (the batch before it was not committed)";

pub(super) type Call = Box<dyn FnOnce(&mut Writer) + Send>;

pub(super) enum Job {
    Batch(Batch),
    Call(Call),
}

/// The writer thread's connection and segment state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) opts: StoreOptions,
    pub(super) hot: u32,
    pub(super) hot_rows: u64,
    pub(super) next_id: i64,
    /// When the oldest commit whose WAL frames are not fsynced yet was made.
    pub(super) unsynced_since: Option<std::time::Instant>,
}

/// A batch queued by [`Store::submit`].
#[derive(Debug)]
pub struct Pending {
    rx: mpsc::Receiver<Result<(), String>>,
    answer: u64,
}

impl Pending {
    /// Waits for the commit; returns the sender's last stored sequence.
    pub fn wait(self) -> Result<u64, StoreError> {
        match self.rx.recv() {
            Ok(Ok(())) => Ok(self.answer),
            Ok(Err(e)) => Err(StoreError::Writer(e)),
            Err(_) => Err(StoreError::Writer("log store writer stopped".into())),
        }
    }
}

impl Writer {
    pub(super) fn create_segment(&mut self, n: u32) -> rusqlite::Result<()> {
        self.conn
            .execute_batch(&segment_sql(Seg { n, sealed: false }))?;
        self.hot = n;
        self.hot_rows = 0;
        Ok(())
    }

    /// Builds a full segment's indexes (one sorted pass each) in its own transaction.
    pub(super) fn seal(&mut self, n: u32) -> rusqlite::Result<()> {
        let seg = Seg { n, sealed: false };
        let started = std::time::Instant::now();
        self.conn
            .execute_batch(&format!("BEGIN IMMEDIATE; {} COMMIT;", index_sql(seg)))
            .inspect_err(|_| {
                let _ = self.conn.execute_batch("ROLLBACK");
            })?;
        if let Some(s) = self
            .shared
            .segs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .find(|s| s.n == n)
        {
            s.sealed = true;
        }
        self.shared
            .counters
            .segments_sealed
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            segment = n,
            ms = started.elapsed().as_millis() as u64,
            "log segment sealed"
        );
        Ok(())
    }

    /// Inserts and commits a group of batches in one transaction. Returns the segments
    /// opened, oldest first.
    fn commit_group(&mut self, group: &[Batch]) -> rusqlite::Result<(Vec<u32>, Vec<bool>)> {
        let (id0, hot0, rows0) = (self.next_id, self.hot, self.hot_rows);
        let fsync = self.group_needs_fsync(group);
        if !fsync {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let res = self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            let mut created = Vec::new();
            let refused = self.insert_group(group, &mut created)?;
            self.conn.execute_batch("COMMIT")?;
            Ok((created, refused))
        });
        if !fsync {
            // Back to FULL for everything else (acknowledged batches, sealing, retention).
            if let Err(e) = self.conn.pragma_update(None, "synchronous", "FULL") {
                tracing::error!(error = %e, "log store: synchronous=FULL not restored");
            }
        }
        match res {
            Ok(r) => {
                self.note_commit(fsync);
                Ok(r)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.next_id = id0;
                self.hot = hot0;
                self.hot_rows = rows0;
                Err(e)
            }
        }
    }

    /// Whether a group's commit must fsync the WAL: it holds an acknowledged batch, or
    /// unacknowledged lines have waited for an fsync as long as the window allows.
    fn group_needs_fsync(&self, group: &[Batch]) -> bool {
        self.opts.sync_window.is_zero()
            || group
                .iter()
                .any(|b| b.durability == Durability::Acknowledged)
            || self.sync_due(std::time::Instant::now())
    }

    /// Whether the oldest commit not fsynced yet has waited the whole window.
    fn sync_due(&self, now: std::time::Instant) -> bool {
        self.unsynced_since
            .is_some_and(|t| now.duration_since(t) >= self.opts.sync_window)
    }

    /// Notes a successful commit: with an fsync, every earlier frame is on disk too.
    fn note_commit(&mut self, fsynced: bool) {
        if fsynced {
            self.unsynced_since = None;
        } else if self.unsynced_since.is_none() {
            self.unsynced_since = Some(std::time::Instant::now());
        }
    }

    /// Fsyncs the WAL file (SQLite wrote the frames of commits made without an fsync; an
    /// fsync through any descriptor of the file puts them on disk).
    fn sync_wal(&mut self) {
        if self.unsynced_since.is_none() {
            return;
        }
        let wal = format!("{}-wal", self.conn.path().unwrap_or_default());
        match std::fs::File::open(&wal).and_then(|f| f.sync_data()) {
            Ok(()) => self.unsynced_since = None,
            Err(e) => {
                tracing::warn!(error = %e, path = %wal, "log store: syncing the WAL failed");
                // Tried again after another window (not in a busy loop).
                self.unsynced_since = Some(std::time::Instant::now());
            }
        }
    }

    /// The next job; while unacknowledged commits wait for their fsync, the WAL is synced when
    /// the window ends with nothing else to do. `None` once the queue is closed (after a
    /// last sync).
    fn next_job(&mut self, rx: &mpsc::Receiver<Job>) -> Option<Job> {
        loop {
            let Some(since) = self.unsynced_since else {
                return rx.recv().ok();
            };
            let left = self.opts.sync_window.saturating_sub(since.elapsed());
            match rx.recv_timeout(left) {
                Ok(j) => return Some(j),
                Err(mpsc::RecvTimeoutError::Timeout) => self.sync_wal(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.sync_wal();
                    return None;
                }
            }
        }
    }

    /// Inserts a group's batches; returns, per batch, whether it was refused (a [`Chain`] that
    /// did not continue).
    fn insert_group(
        &mut self,
        group: &[Batch],
        created: &mut Vec<u32>,
    ) -> rusqlite::Result<Vec<bool>> {
        let mut refused = Vec::with_capacity(group.len());
        for b in group {
            if let Some(c) = &b.chain {
                let now: Option<String> = self
                    .conn
                    .prepare_cached("SELECT json FROM kv WHERE key=?1")?
                    .query_row(params![c.key], |r| r.get(0))
                    .optional()?;
                if now != c.expect {
                    refused.push(true);
                    continue;
                }
                self.conn
                    .prepare_cached("INSERT INTO kv(key,json) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET json=excluded.json")?
                    .execute(params![c.key, c.next])?;
            }
            refused.push(false);
            let mut i = 0;
            while i < b.rows.len() {
                if self.hot_rows >= self.opts.segment_rows {
                    let n = self.hot + 1;
                    self.create_segment(n)?;
                    created.push(n);
                }
                let room = (self.opts.segment_rows - self.hot_rows) as usize;
                let part = &b.rows[i..b.rows.len().min(i + room)];
                self.insert_rows(&b.dev, b.rtime, part)?;
                i += part.len();
            }
            if let Some(last) = b.last {
                self.conn
                    .prepare_cached("INSERT INTO seqs(dev,last) VALUES(?1,?2) ON CONFLICT(dev) DO UPDATE SET last=excluded.last")?
                    .execute(params![b.dev, last as i64])?;
            }
            for (k, v) in &b.kv {
                match v {
                    Some(json) => {
                        self.conn
                            .prepare_cached("INSERT INTO kv(key,json) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET json=excluded.json")?
                            .execute(params![k, json])?;
                    }
                    None => {
                        self.conn
                            .prepare_cached("DELETE FROM kv WHERE key=?1")?
                            .execute(params![k])?;
                    }
                }
            }
        }
        Ok(refused)
    }

    fn insert_rows(&mut self, dev: &str, rtime: i64, rows: &[Row]) -> rusqlite::Result<()> {
        let seg = Seg {
            n: self.hot,
            sealed: false,
        };
        // Prepared single-row INSERTs: a multi-row INSERT needs a statement journal (a copy of
        // every page it touches, to undo a half-done statement), which costs more than the
        // VDBE round trips it saves.
        let mut id = self.next_id;
        let mut st = self
            .conn
            .prepare_cached(&insert_sql(&seg.logs_table(), 1))?;
        let mut sr = self.conn.prepare_cached(&format!(
            "INSERT INTO {}(id, raw) VALUES(?1, ?2)",
            seg.raws_table()
        ))?;
        for r in rows {
            let mut i = 1;
            bind_row(&mut st, &mut i, id, dev, rtime, r)?;
            st.raw_execute()?;
            sr.raw_bind_parameter(1, id)?;
            sr.raw_bind_parameter(2, &r.raw)?;
            sr.raw_execute()?;
            id += 1;
        }
        self.next_id = id;
        self.hot_rows += rows.len() as u64;
        Ok(())
    }

    /// The writer thread: group commits and calls, in queue order.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut carry: Option<Job> = None;
        loop {
            let job = match carry.take() {
                Some(j) => j,
                None => match self.next_job(&rx) {
                    Some(j) => j,
                    None => return,
                },
            };
            let first = match job {
                Job::Call(f) => {
                    f(&mut self);
                    continue;
                }
                Job::Batch(b) => b,
            };
            let mut n = first.rows.len();
            let mut group = vec![first];
            while n < self.opts.group_rows {
                match rx.try_recv() {
                    Ok(Job::Batch(b)) => {
                        n += b.rows.len();
                        group.push(b);
                    }
                    Ok(call) => {
                        carry = Some(call);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let counters = self.shared.counters.clone();
            let hot_before = self.hot;
            match self.commit_group(&group) {
                Ok((created, refused)) => {
                    let n: usize = group
                        .iter()
                        .zip(&refused)
                        .filter(|(_, r)| !**r)
                        .map(|(b, _)| b.rows.len())
                        .sum();
                    if !created.is_empty() {
                        counters
                            .segments_created
                            .fetch_add(created.len() as u64, Ordering::Relaxed);
                        self.shared
                            .segs
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(created.iter().map(|&n| Seg { n, sealed: false }));
                    }
                    {
                        let mut committed = self
                            .shared
                            .committed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        for b in &group {
                            if let Some(last) = b.last {
                                committed.insert(b.dev.clone(), last);
                            }
                        }
                    }
                    counters.inserted.fetch_add(n as u64, Ordering::Relaxed);
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    counters
                        .batches
                        .fetch_add(group.len() as u64, Ordering::Relaxed);
                    for (b, refused) in group.into_iter().zip(refused) {
                        let _ = b.done.send(match refused {
                            false => Ok(()),
                            true => Err(STALE_CHAIN.to_string()),
                        });
                    }
                    // Segments closed by this group: the one that was hot and any filled in
                    // passing. Sealing after the acks keeps it off their latency.
                    if let Some(&newest) = created.last() {
                        for n in std::iter::once(hot_before).chain(created.iter().copied()) {
                            if n != newest {
                                if let Err(e) = self.seal(n) {
                                    tracing::warn!(segment = n, error = %e, "sealing a log segment failed; it stays unindexed");
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    // The error names the database file (a full disk is "database or disk is
                    // full" from SQLite, with no path of its own).
                    let msg = format!(
                        "log store {}: commit failed: {e}",
                        self.conn.path().unwrap_or("(memory)")
                    );
                    tracing::error!(error = %e, rows = n, "log store group commit failed");
                    // Nothing queued behind the failed group may be committed (a later ack
                    // would cover the lost lines): fail it all and rewind the accepted
                    // sequences to the committed ones, so senders resend from there.
                    let mut calls: Vec<Call> = Vec::new();
                    {
                        let shared = self.shared.clone();
                        let mut accepted =
                            shared.accepted.lock().unwrap_or_else(|e| e.into_inner());
                        *accepted = shared
                            .committed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone();
                        for b in group {
                            let _ = b.done.send(Err(msg.clone()));
                        }
                        let queued = carry
                            .take()
                            .into_iter()
                            .chain(std::iter::from_fn(|| rx.try_recv().ok()));
                        for j in queued {
                            match j {
                                Job::Batch(b) => {
                                    let _ = b.done.send(Err(msg.clone()));
                                }
                                Job::Call(f) => calls.push(f),
                            }
                        }
                    }
                    for f in calls {
                        f(&mut self);
                    }
                }
            }
        }
    }
}

impl Store {
    /// The last committed sequence number of a sender.
    pub fn last_seq(&self, dev: &str) -> u64 {
        let c = self
            .shared
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.get(dev).copied().unwrap_or(0)
    }

    /// Stores a batch durably. `first_seq` 0 means unsequenced (syslog): every row is stored.
    /// Rows whose sequence is at or below the sender's last stored sequence are dropped.
    /// `hook` sees the rows being stored (in arrival order: batches are hooked in the order
    /// they are committed) and returns key/value updates committed with them. Returns, once
    /// the rows are committed, the sender's last stored sequence.
    pub fn commit(
        &self,
        dev: &str,
        first_seq: u64,
        rows: Vec<Row>,
        rtime: i64,
        hook: impl FnOnce(&[Row]) -> KvUpdates,
    ) -> Result<u64, StoreError> {
        self.submit(dev, first_seq, rows, rtime, hook)?.wait()
    }

    /// [`Store::commit`] in two steps: queues the batch for the writer (in the order of the
    /// calls) and returns at once; [`Pending::wait`] waits for the durable commit. Lets a
    /// caller prepare its next batch while this one commits.
    pub fn submit(
        &self,
        dev: &str,
        first_seq: u64,
        rows: Vec<Row>,
        rtime: i64,
        hook: impl FnOnce(&[Row]) -> KvUpdates,
    ) -> Result<Pending, StoreError> {
        self.submit_with(Durability::Acknowledged, dev, first_seq, rows, rtime, hook)
    }

    /// [`Store::submit`] with the batch's [`Durability`] (syslog: unacknowledged, committed
    /// without waiting for an fsync of its own).
    pub fn submit_with(
        &self,
        durability: Durability,
        dev: &str,
        first_seq: u64,
        rows: Vec<Row>,
        rtime: i64,
        hook: impl FnOnce(&[Row]) -> KvUpdates,
    ) -> Result<Pending, StoreError> {
        self.submit_chained(durability, None, dev, first_seq, rows, rtime, hook)
    }

    /// [`Store::submit_with`] for a batch that continues a [`Chain`] (committed only if the
    /// chain's key holds the expected value; refused with [`STALE_CHAIN`] otherwise).
    #[allow(clippy::too_many_arguments)]
    pub fn submit_chained(
        &self,
        durability: Durability,
        chain: Option<Chain>,
        dev: &str,
        first_seq: u64,
        mut rows: Vec<Row>,
        rtime: i64,
        hook: impl FnOnce(&[Row]) -> KvUpdates,
    ) -> Result<Pending, StoreError> {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let answer = {
            let mut accepted = self
                .shared
                .accepted
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let last = accepted.get(dev).copied().unwrap_or(0);
            if first_seq > last + 1 && last > 0 {
                // The sender skipped numbers (its queue lost lines): store what came, count it.
                self.counters.seq_gaps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(dev, last, first_seq, "sequence gap from sender");
            }
            if first_seq > 0 {
                let skip = (last + 1).saturating_sub(first_seq).min(rows.len() as u64) as usize;
                if skip > 0 {
                    self.counters
                        .duplicates
                        .fetch_add(skip as u64, Ordering::Relaxed);
                    rows.drain(..skip);
                }
                for (i, r) in rows.iter_mut().enumerate() {
                    r.seq = first_seq + skip as u64 + i as u64;
                }
            }
            if rows.is_empty() && self.last_seq(dev) >= last {
                let _ = done_tx.send(Ok(()));
                return Ok(Pending {
                    rx: done_rx,
                    answer: last,
                });
            }
            let new_last = if first_seq > 0 {
                rows.last().map(|r| r.seq).unwrap_or(last)
            } else {
                last
            };
            // An all-duplicate batch whose lines are still queued waits for their commit (an
            // empty job behind them) before it is acknowledged.
            let kv = if rows.is_empty() {
                Vec::new()
            } else {
                hook(&rows)
            };
            self.send(Job::Batch(Batch {
                dev: dev.to_string(),
                rows,
                rtime,
                last: (first_seq > 0 && new_last > last).then_some(new_last),
                kv,
                durability,
                chain,
                done: done_tx,
            }))?;
            if first_seq > 0 {
                accepted.insert(dev.to_string(), new_last);
            }
            if first_seq > 0 {
                new_last
            } else {
                last
            }
        };
        Ok(Pending {
            rx: done_rx,
            answer,
        })
    }
}
