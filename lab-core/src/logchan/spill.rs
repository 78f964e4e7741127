//! The sender's queue: unacknowledged lines in memory (at most `mem_limit`), older ones spilled to
//! append-only segment files, plus the persisted sequence state. Synchronous and socket-free.
//!
//! Lines are numbered by an internal index `idx` (1, 2, ...). The sequence number on the wire is
//! `idx + offset`; the offset only changes when the server remembers a higher sequence than this
//! queue ever issued (the sender's state was lost), so the queue renumbers above it instead of
//! having its lines dropped as duplicates.
//!
//! Files under the queue directory:
//! - `state.json`: `{"next_idx", "acked", "offset", "clean"}`. While running, `next_idx` is a
//!   reservation ahead of the real counter (rewritten every [`RESERVE`] lines), so a crash never
//!   reuses a number; a clean close writes the exact value.
//! - `seg-<first idx>.q`: records `u32 len (BE) | UTF-8 line`, consecutive indexes from the
//!   first. A segment is deleted once every line in it is acknowledged. A torn record at the end
//!   (crash during a write) is cut off when the queue opens.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::frame::BatchEncoder;

/// How many sequence numbers one state write reserves.
pub const RESERVE: u64 = 65_536;
/// After a failed spill, the next attempt waits this long (lines that do not fit in memory
/// meanwhile are dropped and counted).
pub const SPILL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// A segment file holds at most this many lines ...
pub const SEG_MAX_LINES: u64 = 8192;
/// ... or this many bytes.
pub const SEG_MAX_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    next_idx: u64,
    acked: u64,
    offset: u64,
    clean: bool,
    /// A server has answered a hello from this queue at least once.
    #[serde(default)]
    talked: bool,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub first: u64,
    pub count: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.count // one past the last idx
    }
}

struct SegWriter {
    next: u64,
    file: BufWriter<File>,
}

/// Where the next batch comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// Nothing to send at or after the cursor (below the limit).
    Nothing,
    /// Lines in memory from `cursor`.
    Memory { cursor: u64 },
    /// Lines in the segment file `path` (first idx `first`), from `cursor` to `end` (exclusive).
    Disk {
        cursor: u64,
        first: u64,
        end: u64,
        path: PathBuf,
    },
}

pub(crate) struct Queue {
    dir: PathBuf,
    mem_limit: usize,
    pub next_idx: u64,
    pub acked: u64,
    pub offset: u64,
    /// No server ever answered this queue's hello (a new or wiped queue directory).
    pub fresh: bool,
    reserved: u64,
    mem: VecDeque<String>,
    mem_first: u64,
    segs: VecDeque<Segment>,
    writer: Option<SegWriter>,
    pub last_error: Option<String>,
    /// Lines refused because memory was full and spilling failed.
    pub dropped: u64,
    spill_failing: bool,
    spill_retry_at: Option<std::time::Instant>,
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.q"))
}

impl Queue {
    /// Opens (or creates) the queue under `dir`.
    pub fn open(dir: &Path, mem_limit: usize) -> std::io::Result<Queue> {
        std::fs::create_dir_all(dir)?;
        let state_path = dir.join("state.json");
        let (state, fresh) = match std::fs::read(&state_path) {
            Ok(b) => {
                let st = serde_json::from_slice::<State>(&b).map_err(std::io::Error::other)?;
                let fresh = !st.talked;
                (st, fresh)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), true),
            Err(e) => return Err(e),
        };
        let mut segs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(first) = name
                .strip_prefix("seg-")
                .and_then(|s| s.strip_suffix(".q"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let (count, bytes) = scan_segment(&path)?;
            if count == 0 || first + count - 1 <= state.acked {
                std::fs::remove_file(&path)?;
                continue;
            }
            segs.push(Segment {
                first,
                count,
                bytes,
                path,
            });
        }
        segs.sort_by_key(|s| s.first);
        let seg_end = segs.last().map(|s| s.end()).unwrap_or(1);
        let next_idx = state.next_idx.max(seg_end).max(state.acked + 1).max(1);
        let mut q = Queue {
            dir: dir.to_path_buf(),
            mem_limit,
            next_idx,
            acked: state.acked,
            offset: state.offset,
            fresh,
            reserved: 0,
            mem: VecDeque::new(),
            mem_first: next_idx,
            segs: segs.into(),
            writer: None,
            last_error: None,
            dropped: 0,
            spill_failing: false,
            spill_retry_at: None,
        };
        q.reserved = next_idx + RESERVE;
        q.write_state(false)?;
        Ok(q)
    }

    fn write_state(&self, clean: bool) -> std::io::Result<()> {
        let st = State {
            next_idx: if clean { self.next_idx } else { self.reserved },
            acked: self.acked,
            offset: self.offset,
            clean,
            talked: !self.fresh,
        };
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&st).map_err(std::io::Error::other)?)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)
    }

    /// Persists the state now (after a renumbering or when the sender stops talking to a
    /// fresh server for the first time).
    pub fn save(&mut self) {
        if let Err(e) = self.write_state(false) {
            self.last_error = Some(format!(
                "queue state {}: {e}",
                self.dir.join("state.json").display()
            ));
        }
    }

    /// Queues a line; returns its idx, or `None` when the line is dropped: memory holds
    /// `mem_limit` lines and spilling failed (disk full, unwritable queue directory). Then
    /// [`Queue::last_error`] names the file and the error, [`Queue::dropped`] counts the line,
    /// and spilling is tried again at most every [`SPILL_RETRY`] (so the queue recovers once
    /// space returns).
    pub fn push(&mut self, line: String) -> Option<u64> {
        if self.mem.len() >= self.mem_limit.max(1) {
            let now = std::time::Instant::now();
            if self.spill_retry_at.is_none_or(|at| now >= at) {
                let n = self.mem.len() - self.mem_limit / 2;
                match self.spill(n) {
                    Ok(()) => {
                        self.spill_retry_at = None;
                        if self.spill_failing {
                            self.spill_failing = false;
                            tracing::info!(dir = %self.dir.display(), "log queue spills to disk again");
                        }
                    }
                    Err(e) => {
                        if !self.spill_failing {
                            tracing::error!(error = %e, "log queue cannot spill to disk; new lines are dropped while memory is full");
                        }
                        self.spill_failing = true;
                        self.last_error = Some(e);
                        self.spill_retry_at = Some(now + SPILL_RETRY);
                    }
                }
            }
            if self.mem.len() >= self.mem_limit.max(1) {
                self.dropped += 1;
                return None;
            }
        }
        let idx = self.next_idx;
        self.next_idx += 1;
        self.mem.push_back(line);
        if self.next_idx >= self.reserved {
            self.reserved = self.next_idx + RESERVE;
            if let Err(e) = self.write_state(false) {
                self.last_error = Some(format!(
                    "queue state {}: {e}",
                    self.dir.join("state.json").display()
                ));
            }
        }
        Some(idx)
    }

    /// Moves the `n` oldest in-memory lines to segment files. On error the segment being
    /// written is cut back to its last complete record (the lines stay in memory) and the
    /// error names the file.
    fn spill(&mut self, n: usize) -> Result<(), String> {
        let mut path = self.dir.clone();
        match self.spill_inner(n, &mut path) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abandon_writer();
                Err(format!("spill to {}: {e}", path.display()))
            }
        }
    }

    /// Drops the segment writer after a failed write, cutting the file back to the records
    /// counted in its segment (an empty segment is removed).
    fn abandon_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            let (file, _unwritten) = w.file.into_parts();
            if let Some(seg) = self.segs.back() {
                let _ = file.set_len(seg.bytes);
            }
        }
        if self.segs.back().is_some_and(|s| s.count == 0) {
            if let Some(s) = self.segs.pop_back() {
                let _ = std::fs::remove_file(&s.path);
            }
        }
    }

    fn spill_inner(&mut self, n: usize, path_out: &mut PathBuf) -> std::io::Result<()> {
        let mut left = n.min(self.mem.len());
        while left > 0 {
            let idx = self.mem_first;
            let need_new = match (&self.writer, self.segs.back()) {
                (Some(w), Some(last)) => {
                    w.next != idx || last.count >= SEG_MAX_LINES || last.bytes >= SEG_MAX_BYTES
                }
                _ => true,
            };
            if need_new {
                if let Some(mut w) = self.writer.take() {
                    if let Some(last) = self.segs.back() {
                        *path_out = last.path.clone();
                    }
                    w.file.flush()?;
                }
                let path = seg_path(&self.dir, idx);
                *path_out = path.clone();
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                self.segs.push_back(Segment {
                    first: idx,
                    count: 0,
                    bytes: 0,
                    path,
                });
                self.writer = Some(SegWriter {
                    next: idx,
                    file: BufWriter::with_capacity(256 * 1024, file),
                });
            }
            let w = self.writer.as_mut().expect("writer just ensured");
            let seg = self.segs.back_mut().expect("segment just ensured");
            *path_out = seg.path.clone();
            let mut added = 0usize;
            let mut bytes = 0u64;
            while added < left
                && seg.count + (added as u64) < SEG_MAX_LINES
                && seg.bytes + bytes < SEG_MAX_BYTES
            {
                let line = &self.mem[added];
                w.file.write_all(&(line.len() as u32).to_be_bytes())?;
                w.file.write_all(line.as_bytes())?;
                bytes += 4 + line.len() as u64;
                added += 1;
            }
            // Records become visible to readers only once they reach the file.
            w.file.flush()?;
            w.next += added as u64;
            seg.count += added as u64;
            seg.bytes += bytes;
            self.mem_first += added as u64;
            self.mem.drain(..added);
            left -= added;
        }
        Ok(())
    }

    /// Everything up to `idx` is acknowledged: drop it from memory and delete finished segments.
    pub fn ack(&mut self, idx: u64) {
        if idx <= self.acked {
            return;
        }
        self.acked = idx.min(self.next_idx - 1);
        while self.mem_first <= self.acked && !self.mem.is_empty() {
            self.mem.pop_front();
            self.mem_first += 1;
        }
        if self.mem.is_empty() && self.mem_first <= self.acked {
            self.mem_first = self.acked + 1;
        }
        let mut deleted = false;
        while let Some(s) = self.segs.front() {
            if s.end() - 1 > self.acked {
                break;
            }
            let s = self.segs.pop_front().expect("front exists");
            if self.segs.is_empty() {
                self.writer = None; // the tail segment: close it before deleting
            }
            if let Err(e) = std::fs::remove_file(&s.path) {
                self.last_error = Some(format!("delete {}: {e}", s.path.display()));
            }
            deleted = true;
        }
        if deleted {
            self.save();
        }
    }

    /// Renumbers so that the first unacknowledged line gets sequence `last_server + 1`.
    pub fn renumber_above(&mut self, last_server: u64) {
        let first_seq = self.acked + 1 + self.offset;
        if first_seq <= last_server {
            self.offset += last_server + 1 - first_seq;
            self.save();
        }
    }

    /// Spilling fails now (the last attempt did): `last_error` says why.
    pub fn spill_failing(&self) -> bool {
        self.spill_failing
    }

    pub fn in_memory(&self) -> u64 {
        self.mem.len() as u64
    }

    pub fn spilled(&self) -> u64 {
        self.segs
            .iter()
            .map(|s| s.end().saturating_sub(s.first.max(self.acked + 1)))
            .sum()
    }

    pub fn queued(&self) -> u64 {
        self.in_memory() + self.spilled()
    }

    /// Where lines at or after `cursor` (and below `limit`) are, skipping numbering gaps.
    pub fn source(&self, cursor: u64, limit: u64) -> Source {
        let cursor = cursor.max(self.acked + 1);
        if cursor >= limit.min(self.next_idx) {
            return Source::Nothing;
        }
        for s in &self.segs {
            if s.end() <= cursor {
                continue;
            }
            let c = cursor.max(s.first);
            if c >= limit {
                return Source::Nothing;
            }
            if c < self.mem_first {
                return Source::Disk {
                    cursor: c,
                    first: s.first,
                    end: s.end().min(limit),
                    path: s.path.clone(),
                };
            }
            break;
        }
        let c = cursor.max(self.mem_first);
        if c < self.next_idx && c < limit {
            Source::Memory { cursor: c }
        } else {
            Source::Nothing
        }
    }

    /// Encodes in-memory lines from `cursor` into a batch; returns (first idx, last idx).
    pub fn encode_memory(
        &self,
        cursor: u64,
        limit: u64,
        max_lines: usize,
        max_bytes: usize,
        out: &mut BytesMut,
    ) -> Option<(u64, u64)> {
        if cursor < self.mem_first {
            return None;
        }
        let start = (cursor - self.mem_first) as usize;
        let end_idx = limit.min(self.next_idx);
        if start >= self.mem.len() || cursor >= end_idx {
            return None;
        }
        let n = ((end_idx - cursor) as usize)
            .min(self.mem.len() - start)
            .min(max_lines);
        let mut b = BatchEncoder::new(out, cursor + self.offset);
        for line in self.mem.range(start..start + n) {
            b.push(line.as_bytes());
            if b.len() >= max_bytes {
                break;
            }
        }
        let c = b.finish() as u64;
        Some((cursor, cursor + c - 1))
    }

    /// Writes a copy of the queue as it is now into the new directory `dst` (a lab snapshot
    /// taken while the sender runs on): the unacknowledged spilled segments, the in-memory
    /// lines as one more segment and the exact state, as a clean close would leave them, so
    /// [`Queue::open`] on `dst` resumes with the same lines and numbering. The queue itself is
    /// not changed.
    pub fn snapshot_to(&mut self, dst: &Path) -> std::io::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.file.flush()?;
        }
        std::fs::create_dir_all(dst)?;
        for s in &self.segs {
            if s.count == 0 || s.end() - 1 <= self.acked {
                continue;
            }
            let to = seg_path(dst, s.first);
            std::fs::copy(&s.path, &to)?;
            // Only the records the queue counts (a write in progress is not one).
            OpenOptions::new().write(true).open(&to)?.set_len(s.bytes)?;
        }
        if !self.mem.is_empty() {
            let mut f = BufWriter::new(File::create(seg_path(dst, self.mem_first))?);
            for line in &self.mem {
                f.write_all(&(line.len() as u32).to_be_bytes())?;
                f.write_all(line.as_bytes())?;
            }
            f.flush()?;
        }
        let st = State {
            next_idx: self.next_idx,
            acked: self.acked,
            offset: self.offset,
            clean: true,
            talked: !self.fresh,
        };
        std::fs::write(
            dst.join("state.json"),
            serde_json::to_vec(&st).map_err(std::io::Error::other)?,
        )
    }

    /// Clean close: everything in memory goes to disk, state written exactly.
    pub fn close(&mut self) -> std::io::Result<()> {
        let n = self.mem.len();
        self.spill(n).map_err(std::io::Error::other)?;
        if let Some(w) = self.writer.as_mut() {
            w.file.flush()?;
            w.file.get_ref().sync_all()?;
        }
        self.writer = None;
        self.write_state(true)
    }
}

/// Counts complete records of a segment and cuts off a torn tail.
fn scan_segment(path: &Path) -> std::io::Result<(u64, u64)> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let total = file.metadata()?.len();
    let mut r = BufReader::new(&file);
    let (mut pos, mut count) = (0u64, 0u64);
    let mut len = [0u8; 4];
    loop {
        if pos + 4 > total {
            break;
        }
        r.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as u64;
        if pos + 4 + n > total {
            break;
        }
        r.seek_relative(n as i64)?;
        pos += 4 + n;
        count += 1;
    }
    if pos < total {
        tracing::warn!(path = %path.display(), kept = pos, total, "cutting a torn record off a queue segment");
        file.set_len(pos)?;
    }
    Ok((count, pos))
}

/// Sequential reader of segment files (owned by the sender task).
#[derive(Default)]
pub(crate) struct DiskReader {
    pos: Option<(PathBuf, u64, BufReader<File>)>,
}

impl DiskReader {
    /// Reads raw records from `cursor` (up to `end`, `max_lines`, about `max_bytes`); returns
    /// the records and how many there are.
    pub fn read(
        &mut self,
        path: &Path,
        first: u64,
        cursor: u64,
        end: u64,
        max_lines: usize,
        max_bytes: usize,
    ) -> std::io::Result<(Vec<u8>, u32)> {
        let reuse = matches!(&self.pos, Some((p, next, _)) if p == path && *next == cursor);
        if !reuse {
            let mut r = BufReader::with_capacity(256 * 1024, File::open(path)?);
            let mut len = [0u8; 4];
            for _ in first..cursor {
                r.read_exact(&mut len)?;
                r.seek_relative(u32::from_be_bytes(len) as i64)?;
            }
            self.pos = Some((path.to_path_buf(), cursor, r));
        }
        let (_, next, r) = self.pos.as_mut().expect("positioned above");
        let mut out = Vec::new();
        let mut count = 0u32;
        let mut len = [0u8; 4];
        while *next < end && (count as usize) < max_lines && out.len() < max_bytes {
            r.read_exact(&mut len)?;
            let n = u32::from_be_bytes(len) as usize;
            out.extend_from_slice(&len);
            let at = out.len();
            out.resize(at + n, 0);
            r.read_exact(&mut out[at..])?;
            *next += 1;
            count += 1;
        }
        Ok((out, count))
    }

    pub fn reset(&mut self) {
        self.pos = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logchan::frame::{decode, Frame};

    fn lines_of(q: &Queue, reader: &mut DiskReader, limit: u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut cursor = 1;
        loop {
            let mut buf = BytesMut::new();
            match q.source(cursor, limit) {
                Source::Nothing => break,
                Source::Memory { cursor: c } => {
                    let (_, last) = q.encode_memory(c, limit, 100, 1 << 20, &mut buf).unwrap();
                    cursor = last + 1;
                }
                Source::Disk {
                    cursor: c,
                    first,
                    end,
                    path,
                } => {
                    let (recs, n) = reader.read(&path, first, c, end, 100, 1 << 20).unwrap();
                    let mut b = BatchEncoder::new(&mut buf, c + q.offset);
                    b.push_records(&recs, n);
                    b.finish();
                    cursor = c + n as u64;
                }
            }
            match decode(&mut buf).unwrap().unwrap() {
                Frame::Batch { first_seq, lines } => {
                    for (i, l) in lines.into_iter().enumerate() {
                        out.push((first_seq + i as u64, l));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn memory_stays_bounded_and_order_is_kept_across_spill() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 100).unwrap();
        assert!(q.fresh);
        for i in 1..=20_000u64 {
            assert_eq!(q.push(format!("line {i}")), Some(i));
            assert!(q.in_memory() <= 100);
        }
        assert_eq!(q.queued(), 20_000);
        assert!(q.spilled() >= 19_900);
        assert!(q.segs.len() >= 3, "segments rotate");
        let mut r = DiskReader::default();
        let got = lines_of(&q, &mut r, u64::MAX);
        assert_eq!(got.len(), 20_000);
        for (i, (seq, l)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(l, &format!("line {}", i + 1));
        }
        // Acking deletes finished segments.
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let before = files();
        q.ack(SEG_MAX_LINES + 10);
        assert!(files() < before);
        assert_eq!(q.queued(), 20_000 - SEG_MAX_LINES - 10);
        q.ack(20_000);
        assert_eq!(q.queued(), 0);
        assert_eq!(files(), 1, "only state.json remains");
    }

    #[test]
    fn a_snapshot_copy_resumes_with_the_same_lines_and_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 10).unwrap();
        q.fresh = false;
        for i in 1..=100u64 {
            q.push(format!("l{i}"));
        }
        q.ack(15);
        q.offset = 7;
        let before = lines_of(&q, &mut DiskReader::default(), u64::MAX);
        assert_eq!(before.len(), 85);
        let snap = dir.path().join("snap");
        q.snapshot_to(&snap).unwrap();
        // The original runs on unchanged.
        assert_eq!(q.push("l101".into()), Some(101));
        assert_eq!(q.queued(), 86);
        // The copy opens as the queue was at the cut.
        let copy = Queue::open(&snap, 10).unwrap();
        assert!(!copy.fresh);
        assert_eq!((copy.next_idx, copy.acked, copy.offset), (101, 15, 7));
        assert_eq!(
            lines_of(&copy, &mut DiskReader::default(), u64::MAX),
            before
        );
        assert_eq!(before.first().unwrap(), &(23, "l16".to_string()));
    }

    #[test]
    fn clean_close_keeps_everything_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 1000).unwrap();
        for i in 1..=50u64 {
            q.push(format!("l{i}"));
        }
        q.ack(20);
        q.close().unwrap();
        drop(q);
        let mut q = Queue::open(dir.path(), 1000).unwrap();
        assert!(q.fresh, "no server has answered yet");
        assert_eq!(q.next_idx, 51);
        assert_eq!(q.queued(), 30);
        assert_eq!(q.push("l51".into()), Some(51));
        let got = lines_of(&q, &mut DiskReader::default(), u64::MAX);
        assert_eq!(got.first().unwrap(), &(21, "l21".to_string()));
        assert_eq!(got.last().unwrap(), &(51, "l51".to_string()));
        assert_eq!(got.len(), 31);
    }

    #[test]
    fn crash_keeps_spilled_lines_skips_reserved_numbers_and_cuts_torn_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 10).unwrap();
        for i in 1..=100u64 {
            q.push(format!("l{i}"));
        }
        let spilled_last = q.mem_first - 1;
        drop(q); // no close(): a crash
                 // A torn record at the end of the last segment.
        let mut segs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "q"))
            .collect();
        segs.sort();
        let mut f = OpenOptions::new()
            .append(true)
            .open(segs.last().unwrap())
            .unwrap();
        f.write_all(&[0, 0, 0, 50, b'x']).unwrap();
        drop(f);
        let mut q = Queue::open(dir.path(), 10).unwrap();
        assert_eq!(q.queued(), spilled_last);
        assert!(
            q.next_idx > 100,
            "numbers issued before the crash are never reused"
        );
        let n = q.push("after".into()).unwrap();
        let got = lines_of(&q, &mut DiskReader::default(), u64::MAX);
        assert_eq!(got.len() as u64, spilled_last + 1);
        assert_eq!(got.last().unwrap(), &(n, "after".to_string()));
        assert_eq!(got[0], (1, "l1".to_string()));
    }

    #[test]
    fn a_failing_spill_keeps_memory_at_the_cap_names_the_file_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("logqueue");
        let mut q = Queue::open(&qdir, 10).unwrap();
        for i in 1..=10u64 {
            assert_eq!(q.push(format!("l{i}")), Some(i));
        }
        // The directory becomes unusable (as a full disk would): a regular file in its place.
        std::fs::remove_dir_all(&qdir).unwrap();
        std::fs::write(&qdir, b"not a directory").unwrap();
        for i in 11..=1000u64 {
            assert_eq!(q.push(format!("l{i}")), None, "line {i} dropped, not held");
            assert!(q.in_memory() <= 10);
        }
        assert_eq!(q.dropped, 990);
        let err = q.last_error.clone().unwrap();
        assert!(
            err.contains(&qdir.display().to_string()) && err.contains("seg-"),
            "the error names the file: {err}"
        );
        // Space returns: after the retry delay spilling works again and nothing is lost.
        std::fs::remove_file(&qdir).unwrap();
        std::fs::create_dir_all(&qdir).unwrap();
        q.spill_retry_at = Some(std::time::Instant::now());
        assert_eq!(q.push("again".into()), Some(11));
        assert!(q.spilled() >= 5);
        let got = lines_of(&q, &mut DiskReader::default(), u64::MAX);
        let want: Vec<(u64, String)> = (1..=10u64)
            .map(|i| (i, format!("l{i}")))
            .chain(std::iter::once((11, "again".to_string())))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn renumbering_moves_unacked_lines_above_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 1000).unwrap();
        for i in 1..=5u64 {
            q.push(format!("l{i}"));
        }
        q.renumber_above(1000);
        let got = lines_of(&q, &mut DiskReader::default(), u64::MAX);
        assert_eq!(got[0], (1001, "l1".to_string()));
        assert_eq!(got[4], (1005, "l5".to_string()));
        // The offset persists.
        q.close().unwrap();
        let q = Queue::open(dir.path(), 1000).unwrap();
        assert_eq!(q.offset, 1000);
    }

    #[test]
    fn limit_stops_at_the_interval_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), 1000).unwrap();
        for i in 1..=10u64 {
            q.push(format!("l{i}"));
        }
        let got = lines_of(&q, &mut DiskReader::default(), 6);
        assert_eq!(got.len(), 5);
    }
}
