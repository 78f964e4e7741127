//! Raw log files: where syslog lines are stored first, as FortiAnalyzer does.
//!
//! A real FortiAnalyzer's `fortilogd` writes the logs it receives into per-device raw log files
//! (they are the archive) and its SQL database is filled from them afterwards; the database
//! may lag behind ("Log Insert Lag Time": how many seconds the database is behind in
//! processing the logs). The twin does the same for syslog: a line counts as stored once it is
//! appended to its device's raw log file (`<dir>/<device>/<NNNNNN>.log`, one line each, the
//! body without the syslog header), and the files are fsynced within the sync window, the
//! durability class of rsyslog's `omfile`. The indexer (`syslog.rs`) reads the files behind
//! the writer and commits the lines into the SQL store, with its read position ([`Cursor`],
//! key `rawlog:<device>` of the key/value table) in the same transaction, so after a crash
//! it resumes where the last commit ended: nothing lost, nothing twice.
//!
//! This file is the file side only (no SQL, no parsing): [`RawWriter`] appends and rotates,
//! [`RawReader`] reads complete lines after a cursor, [`RawStats`] counts both sides and gives
//! the insert lag.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A device's raw log file is closed and a new one started beyond this size.
pub const ROTATE_BYTES: u64 = 64 << 20;
/// Most bytes the indexer reads at a time.
pub const READ_CHUNK: usize = 4 << 20;
/// Prefix of the key/value keys holding each device's [`Cursor`].
pub const CURSOR_KEY: &str = "rawlog:";

/// The key of a device's [`Cursor`] in the key/value table.
pub fn cursor_key(dev: &str) -> String {
    format!("{CURSOR_KEY}{dev}")
}

/// A raw log I/O error, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("raw log {path}: {source}")]
pub struct RawLogError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> RawLogError + '_ {
    move |source| RawLogError {
        path: path.display().to_string(),
        source,
    }
}

/// How far a device's raw log is in the SQL store: file number and byte offset (always at a
/// line boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub file: u32,
    pub off: u64,
}

/// Counters of both sides and the insert lag.
#[derive(Debug, Default)]
pub struct RawStats {
    /// Lines appended (stored) since start.
    pub lines: AtomicU64,
    /// Bytes appended since start, plus the backlog found at start.
    pub bytes: AtomicU64,
    /// Lines committed into the SQL store since start.
    pub indexed_lines: AtomicU64,
    /// Bytes committed into the SQL store since start.
    pub indexed_bytes: AtomicU64,
    /// fsyncs of raw log files.
    pub syncs: AtomicU64,
    /// Append errors (the lines were not stored).
    pub errors: AtomicU64,
    /// (cumulative bytes after an append, when): the age of the oldest unindexed bytes.
    marks: Mutex<VecDeque<(u64, Instant)>>,
}

/// Marks kept at most (beyond this, a new append extends the newest mark: the lag is then
/// measured from a slightly older time).
const MAX_MARKS: usize = 4096;

impl RawStats {
    /// Notes bytes waiting to be indexed (an append, or the backlog found at start).
    pub fn appended(&self, lines: u64, bytes: u64) {
        self.lines.fetch_add(lines, Ordering::Relaxed);
        let end = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let full = m.len() >= MAX_MARKS;
        match m.back_mut() {
            Some(last) if full => last.0 = end,
            _ => m.push_back((end, Instant::now())),
        }
    }

    /// Notes lines committed into the SQL store.
    pub fn indexed(&self, lines: u64, bytes: u64) {
        self.indexed_lines.fetch_add(lines, Ordering::Relaxed);
        let done = self.indexed_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        while m.front().is_some_and(|(end, _)| *end <= done) {
            m.pop_front();
        }
    }

    /// Bytes stored but not in the SQL store yet.
    pub fn lag_bytes(&self) -> u64 {
        self.bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.indexed_bytes.load(Ordering::Relaxed))
    }

    /// How long the oldest line not in the SQL store yet has waited (zero when none waits):
    /// FortiAnalyzer's log insert lag.
    pub fn lag(&self) -> Duration {
        let m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        m.front().map(|(_, t)| t.elapsed()).unwrap_or_default()
    }

    /// The counters and the lag as JSON (`/_lab/stats`).
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "stored_lines": g(&self.lines),
            "indexed_lines": g(&self.indexed_lines),
            "insert_lag_bytes": self.lag_bytes(),
            "insert_lag_s": self.lag().as_secs_f64(),
            "syncs": g(&self.syncs),
            "errors": g(&self.errors),
        })
    }
}

/// A device's directory name: its serial, other characters than `[A-Za-z0-9._-]` as `%XX`.
fn dir_name(dev: &str) -> String {
    let mut s = String::with_capacity(dev.len());
    for b in dev.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !s.is_empty()) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.is_empty() {
        s.push_str("%00");
    }
    s
}

/// The device of a directory name ([`dir_name`] reversed).
fn dev_name(dir: &str) -> Option<String> {
    let b = dir.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            let v = u8::from_str_radix(h, 16).ok()?;
            if v != 0 {
                out.push(v);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn file_name(n: u32) -> String {
    format!("{n:06}.log")
}

/// The raw log files of a device directory, by number, oldest first.
fn list_files(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut v = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e),
    };
    for e in entries {
        let name = e?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// One device's open raw log file.
#[derive(Debug)]
struct OpenFile {
    dev: String,
    file: File,
    path: PathBuf,
    n: u32,
    len: u64,
    dirty: bool,
}

/// Appends to the devices' raw log files (one writer: the syslog ingest thread).
#[derive(Debug)]
pub struct RawWriter {
    dir: PathBuf,
    open: Vec<OpenFile>,
    rotate_bytes: u64,
    /// When the oldest append not fsynced yet was made.
    unsynced_since: Option<Instant>,
}

impl RawWriter {
    pub fn new(dir: &Path, rotate_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            open: Vec::new(),
            rotate_bytes: rotate_bytes.max(1),
            unsynced_since: None,
        }
    }

    /// Opens a device's newest raw log file for appending; a last line left incomplete by a
    /// crash (never counted as stored) is cut off.
    fn open_dev(&mut self, dev: &str) -> Result<usize, RawLogError> {
        if let Some(i) = self.open.iter().position(|o| o.dev == dev) {
            return Ok(i);
        }
        let ddir = self.dir.join(dir_name(dev));
        std::fs::create_dir_all(&ddir).map_err(err(&ddir))?;
        let n = list_files(&ddir)
            .map_err(err(&ddir))?
            .last()
            .copied()
            .unwrap_or(1);
        let path = ddir.join(file_name(n));
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        let len = complete_len(&mut file).map_err(err(&path))?;
        if file.metadata().map_err(err(&path))?.len() != len {
            tracing::warn!(path = %path.display(), len, "raw log: incomplete last line cut off");
            file.set_len(len).map_err(err(&path))?;
        }
        self.open.push(OpenFile {
            dev: dev.to_string(),
            file,
            path,
            n,
            len,
            dirty: false,
        });
        Ok(self.open.len() - 1)
    }

    /// Appends lines (each ending with LF) to a device's raw log: stored once this returns.
    /// On an error nothing of `text` stays in the file.
    pub fn append(&mut self, dev: &str, text: &[u8]) -> Result<(), RawLogError> {
        if text.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(text.last(), Some(&b'\n'));
        let i = self.open_dev(dev)?;
        if self.open[i].len >= self.rotate_bytes {
            self.rotate(i)?;
        }
        let o = &mut self.open[i];
        if let Err(e) = o.file.write_all(text) {
            // Cut a partial write off, so the next append starts on a line boundary.
            let _ = o.file.set_len(o.len);
            return Err(err(&o.path)(e));
        }
        o.len += text.len() as u64;
        o.dirty = true;
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Closes a device's full file (fsynced) and starts the next.
    fn rotate(&mut self, i: usize) -> Result<(), RawLogError> {
        let o = &mut self.open[i];
        o.file.sync_data().map_err(err(&o.path))?;
        o.dirty = false;
        let n = o.n + 1;
        let path = self.dir.join(dir_name(&o.dev)).join(file_name(n));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err(&path))?;
        // The new file's directory entry is durable before lines in it count.
        if let Ok(d) = File::open(self.dir.join(dir_name(&o.dev))) {
            let _ = d.sync_all();
        }
        *o = OpenFile {
            dev: o.dev.clone(),
            file,
            path,
            n,
            len: 0,
            dirty: false,
        };
        Ok(())
    }

    /// How long until the sync window of the oldest unsynced append ends (`None`: nothing to
    /// sync).
    pub fn sync_in(&self, window: Duration) -> Option<Duration> {
        self.unsynced_since
            .map(|t| window.saturating_sub(t.elapsed()))
    }

    /// Fsyncs every file appended to since the last sync.
    pub fn sync(&mut self, stats: &RawStats) -> Result<(), RawLogError> {
        let mut first = Ok(());
        for o in self.open.iter_mut().filter(|o| o.dirty) {
            match o.file.sync_data() {
                Ok(()) => {
                    o.dirty = false;
                    stats.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if first.is_ok() => first = Err(err(&o.path)(e)),
                Err(_) => {}
            }
        }
        if first.is_ok() {
            self.unsynced_since = None;
        } else {
            // Tried again after another window.
            self.unsynced_since = Some(Instant::now());
        }
        first
    }
}

/// The length of a file's complete lines (up to and including its last LF).
fn complete_len(f: &mut File) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let part = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// What [`RawReader::read`] found.
#[derive(Debug, Default)]
pub struct Lines {
    pub lines: Vec<String>,
    /// Bytes the lines took in the file.
    pub bytes: u64,
    /// The cursor after them.
    pub next: Cursor,
}

/// Reads the devices' raw log files (the indexer).
#[derive(Debug, Clone)]
pub struct RawReader {
    dir: PathBuf,
}

impl RawReader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The devices that have a raw log.
    pub fn devices(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().and_then(dev_name))
            .collect();
        v.sort();
        v
    }

    /// Bytes of complete lines after `cur` in a device's files (the backlog at start).
    pub fn backlog(&self, dev: &str, cur: Cursor) -> u64 {
        let ddir = self.dir.join(dir_name(dev));
        let files = list_files(&ddir).unwrap_or_default();
        files
            .iter()
            .filter(|&&n| n >= cur.file)
            .map(|&n| {
                // Complete lines only (a crash may have left half a line at the end).
                let len = File::open(ddir.join(file_name(n)))
                    .and_then(|mut f| complete_len(&mut f))
                    .unwrap_or(0);
                if n == cur.file {
                    len.saturating_sub(cur.off)
                } else {
                    len
                }
            })
            .sum()
    }

    /// Up to `max_lines` complete lines after `cur` (at most [`READ_CHUNK`] bytes), moving on
    /// to the next file once a file is done and a newer one exists. A cursor past the end of
    /// its file (the file was restored from an older copy, or lost its unsynced end in a power
    /// loss) goes on from the end.
    pub fn read(&self, dev: &str, mut cur: Cursor, max_lines: usize) -> Result<Lines, RawLogError> {
        let ddir = self.dir.join(dir_name(dev));
        loop {
            let files = list_files(&ddir).map_err(err(&ddir))?;
            let Some(&file) = files.iter().find(|&&n| n >= cur.file) else {
                return Ok(Lines {
                    next: cur,
                    ..Default::default()
                });
            };
            if file != cur.file {
                cur = Cursor { file, off: 0 };
            }
            // Whether the writer had moved on before we read: then this file is complete.
            let newer = files.iter().any(|&n| n > cur.file);
            let path = ddir.join(file_name(cur.file));
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(&path)(e)),
            };
            let len = f.metadata().map_err(err(&path))?.len();
            cur.off = cur.off.min(len);
            let want = (len - cur.off).min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            f.seek(SeekFrom::Start(cur.off)).map_err(err(&path))?;
            f.read_exact(&mut buf).map_err(err(&path))?;
            let (lines, used) = split_lines(&buf, max_lines.max(1));
            if used > 0 {
                return Ok(Lines {
                    lines,
                    bytes: used as u64,
                    next: Cursor {
                        file: cur.file,
                        off: cur.off + used as u64,
                    },
                });
            }
            if want == READ_CHUNK {
                // A "line" longer than a whole chunk (not written by the twin): taken as is.
                return Ok(Lines {
                    lines: vec![String::from_utf8_lossy(&buf).into_owned()],
                    bytes: want as u64,
                    next: Cursor {
                        file: cur.file,
                        off: cur.off + want as u64,
                    },
                });
            }
            if !newer {
                return Ok(Lines {
                    next: cur,
                    ..Default::default()
                });
            }
            cur = Cursor {
                file: cur.file + 1,
                off: 0,
            };
        }
    }

    /// Deletes a device's files that are wholly indexed (before `cur.file`) beyond the newest
    /// `keep_bytes` of them: the archive's retention.
    pub fn prune(&self, dev: &str, cur: Cursor, keep_bytes: u64) -> u64 {
        let ddir = self.dir.join(dir_name(dev));
        let files = list_files(&ddir).unwrap_or_default();
        let mut kept = 0u64;
        let mut removed = 0;
        for &n in files.iter().rev() {
            let p = ddir.join(file_name(n));
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            kept += len;
            if n < cur.file && kept > keep_bytes && std::fs::remove_file(&p).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The complete lines at the start of `buf` (at most `max`), without their LFs, and the bytes
/// they take.
fn split_lines(buf: &[u8], max: usize) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut pos = 0;
    while lines.len() < max {
        let Some(i) = buf[pos..].iter().position(|b| *b == b'\n') else {
            break;
        };
        lines.push(String::from_utf8_lossy(&buf[pos..pos + i]).into_owned());
        pos += i + 1;
    }
    (lines, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(from: usize, n: usize) -> Vec<u8> {
        (from..from + n)
            .map(|i| format!("line {i}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn read_all(r: &RawReader, dev: &str, mut cur: Cursor, max: usize) -> (Vec<String>, Cursor) {
        let mut all = Vec::new();
        loop {
            let l = r.read(dev, cur, max).unwrap();
            if l.lines.is_empty() {
                return (all, l.next);
            }
            assert_eq!(
                l.bytes,
                l.lines.iter().map(|s| s.len() as u64 + 1).sum::<u64>()
            );
            all.extend(l.lines);
            cur = l.next;
        }
    }

    #[test]
    fn appends_rotate_and_read_back_in_order_across_files() {
        let d = tempfile::tempdir().unwrap();
        let mut w = RawWriter::new(d.path(), 100);
        for k in 0..30 {
            w.append("FGVM01TM00000001", &text(k * 3, 3)).unwrap();
        }
        w.append("FCT/other dev", &text(0, 2)).unwrap();
        let r = RawReader::new(d.path());
        assert_eq!(r.devices(), vec!["FCT/other dev", "FGVM01TM00000001"]);
        let (lines, cur) = read_all(&r, "FGVM01TM00000001", Cursor::default(), 7);
        assert_eq!(lines.len(), 90);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[89], "line 89");
        assert!(cur.file > 5, "rotated: {cur:?}");
        // More after the end: read from the cursor only.
        w.append("FGVM01TM00000001", &text(90, 1)).unwrap();
        let (more, _) = read_all(&r, "FGVM01TM00000001", cur, 7);
        assert_eq!(more, vec!["line 90"]);
        assert_eq!(r.backlog("FGVM01TM00000001", cur), 8);
        // Retention: wholly indexed files beyond the newest 200 bytes go.
        assert!(r.prune("FGVM01TM00000001", cur, 200) > 0);
        let (rest, _) = read_all(&r, "FGVM01TM00000001", Cursor::default(), 100);
        assert!(rest.len() < 91 && rest.last().unwrap() == "line 90");
        w.sync(&RawStats::default()).unwrap();
        assert_eq!(w.sync_in(Duration::from_secs(1)), None);
    }

    #[test]
    fn an_incomplete_last_line_is_not_read_and_is_cut_off_on_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut w = RawWriter::new(d.path(), ROTATE_BYTES);
        w.append("D", &text(0, 2)).unwrap();
        drop(w);
        // A crash in the middle of an append.
        let p = d.path().join("D").join(file_name(1));
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"half a li").unwrap();
        let r = RawReader::new(d.path());
        let (lines, cur) = read_all(&r, "D", Cursor::default(), 10);
        assert_eq!(lines, vec!["line 0", "line 1"]);
        let mut w = RawWriter::new(d.path(), ROTATE_BYTES);
        w.append("D", &text(2, 1)).unwrap();
        let (lines, _) = read_all(&r, "D", cur, 10);
        assert_eq!(lines, vec!["line 2"]);
        // A cursor beyond the end (an older copy of the file) goes on from the end.
        let far = Cursor {
            file: 1,
            off: 10_000,
        };
        assert!(r.read("D", far, 10).unwrap().lines.is_empty());
    }

    #[test]
    fn the_lag_is_the_age_of_the_oldest_unindexed_bytes() {
        let s = RawStats::default();
        assert_eq!(s.lag(), Duration::ZERO);
        s.appended(2, 100);
        s.appended(1, 50);
        assert_eq!(s.lag_bytes(), 150);
        assert!(s.lag() > Duration::ZERO);
        s.indexed(2, 100);
        assert_eq!(s.lag_bytes(), 50);
        s.indexed(1, 50);
        assert_eq!(s.lag(), Duration::ZERO);
        assert_eq!(s.snapshot()["indexed_lines"], 3);
    }

    #[test]
    fn device_directory_names_round_trip() {
        for d in ["FGVM01TM00000001", "a/b", "..", "", "x y%"] {
            let n = dir_name(d);
            assert!(!n.contains('/') && n != ".." && n != ".", "{n}");
            assert_eq!(dev_name(&n).as_deref(), Some(d), "{n}");
        }
    }
}
