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

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};

use fortilab_core::logfmt::{body_start, unquote_at};
#[cfg(doc)]
use fortilab_core::logfmt::{LogRecord, LogValue};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};
use std::borrow::Cow;

use crate::filter::{self, ip_value, Expr};

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

/// Log types of the FAZ log view (`logtype` of a log search).
pub const LOGTYPES: &[(&str, i64)] = &[
    ("traffic", 1),
    ("webfilter", 2),
    ("event", 3),
    ("dns", 4),
    ("fct-event", 5),
    ("fct-traffic", 6),
    ("app-ctrl", 7),
    ("attack", 8),
    ("virus", 9),
    ("emailfilter", 10),
    ("dlp", 11),
    ("voip", 12),
    ("content", 13),
    ("history", 14),
    ("netscan", 15),
    ("waf", 16),
    ("gtp", 17),
    ("ssl", 18),
    ("file-filter", 19),
    ("unknown", 99),
];

pub fn logtype_code(name: &str) -> Option<i64> {
    LOGTYPES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

pub fn logtype_name(code: i64) -> &'static str {
    LOGTYPES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(n, _)| *n)
        .unwrap_or("unknown")
}

/// Which log type a record is.
pub fn classify(log_type: &str, subtype: &str, from_client: bool) -> i64 {
    if from_client {
        return if log_type == "traffic" { 6 } else { 5 };
    }
    match log_type {
        "traffic" => 1,
        "event" => 3,
        "utm" => match subtype {
            "webfilter" => 2,
            "dns" => 4,
            "app-ctrl" => 7,
            "ips" | "anomaly" => 8,
            "virus" => 9,
            "emailfilter" => 10,
            "dlp" => 11,
            "voip" => 12,
            "waf" => 16,
            "ssl" => 18,
            "file-filter" => 19,
            _ => 99,
        },
        "webfilter" => 2,
        "dns" => 4,
        _ => 99,
    }
}

/// One parsed log, ready to insert.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub ltype: i64,
    pub log_type: String,
    pub subtype: String,
    pub logid: Option<String>,
    pub level: Option<String>,
    pub srcip: Option<String>,
    pub dstip: Option<String>,
    pub srcport: Option<i64>,
    pub dstport: Option<i64>,
    pub hostname: Option<String>,
    pub qname: Option<String>,
    pub ipaddr: Option<String>,
    pub url: Option<String>,
    pub action: Option<String>,
    pub policyid: Option<i64>,
    pub devid: Option<String>,
    pub devname: Option<String>,
    pub vd: Option<String>,
    /// Event time, Unix seconds.
    pub etime: i64,
    pub catdesc: Option<String>,
    pub cat: Option<i64>,
    pub user: Option<String>,
    pub srcname: Option<String>,
    pub srcmac: Option<String>,
    pub raw: String,
    pub from_client: bool,
    /// Set by [`Store::commit`]: the sequence number of the line (0 for syslog).
    pub seq: u64,
}

impl Row {
    /// The IOC engine's view of this row.
    pub fn ioc_view(&self) -> crate::ioc::LogView<'_> {
        crate::ioc::LogView {
            log_type: &self.log_type,
            subtype: &self.subtype,
            from_client: self.from_client,
            srcip: self.srcip.as_deref(),
            dstip: self.dstip.as_deref(),
            hostname: self.hostname.as_deref(),
            qname: self.qname.as_deref(),
            url: self.url.as_deref(),
            ipaddr: self.ipaddr.as_deref(),
        }
    }
}

/// One `key=value` pair of a FortiOS line, borrowed from the line where possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair<'a> {
    pub key: &'a str,
    /// The value without quotes; owned only when a quoted value had escapes.
    pub value: Cow<'a, str>,
    pub quoted: bool,
}

impl Pair<'_> {
    /// The value as [`LogValue::as_text`] gives it (bare integers and IPv6 addresses in
    /// canonical form).
    pub fn text(&self) -> String {
        if !self.quoted {
            let v = self.value.as_ref();
            if let Ok(n) = v.parse::<i64>() {
                if !(v.len() > 1 && v.starts_with('0')) {
                    return n.to_string();
                }
            } else if v.contains(':') {
                if let Ok(ip) = v.parse::<IpAddr>() {
                    return ip.to_string();
                }
            }
        }
        self.value.clone().into_owned()
    }

    /// The value as an integer ([`LogValue::as_i64`]).
    pub fn int(&self) -> Option<i64> {
        self.value.parse().ok()
    }
}

/// Splits a FortiOS `key=value` line (optionally behind a syslog `<PRI>`) into pairs without
/// allocating, with the same rules as [`LogRecord::parse`]: `None` where that returns an error.
/// `f` returns false to stop early.
pub fn for_each_pair<'a>(line: &'a str, mut f: impl FnMut(Pair<'a>) -> bool) -> Option<()> {
    let bytes = line.as_bytes();
    let mut i = body_start(line);
    let mut any = false;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'\n' || bytes[i] == b'\r' {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b' ' {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' || i == key_start {
            return None;
        }
        let key = &line[key_start..i];
        i += 1;
        let pair = if i < bytes.len() && bytes[i] == b'"' {
            let (value, next) = unquote_at(line, i)?;
            i = next;
            Pair {
                key,
                value,
                quoted: true,
            }
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b' ' && bytes[i] != b'\n' && bytes[i] != b'\r' {
                i += 1;
            }
            Pair {
                key,
                value: Cow::Borrowed(&line[start..i]),
                quoted: false,
            }
        };
        any = true;
        if !f(pair) {
            return Some(());
        }
    }
    any.then_some(())
}

/// Parses one FortiOS line into a row. A line that does not parse is kept as type `unknown`
/// (nothing acknowledged is dropped) and reported with `false`.
pub fn parse_row(line: &str, from_client: bool, now_s: i64, tz_minutes: i32) -> (Row, bool) {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut r = Row {
        from_client,
        ..Default::default()
    };
    let mut date = None;
    let mut time = None;
    let mut tz = None;
    let ok = for_each_pair(line, |p| {
        match p.key {
            "type" => r.log_type = p.text(),
            "subtype" => r.subtype = p.text(),
            "logid" => r.logid = Some(p.text()),
            "level" => r.level = Some(p.text()),
            "srcip" => r.srcip = Some(p.text()),
            "dstip" => r.dstip = Some(p.text()),
            "srcport" => r.srcport = p.int(),
            "dstport" => r.dstport = p.int(),
            "hostname" => r.hostname = Some(p.text()),
            "qname" => r.qname = Some(p.text()),
            "ipaddr" => r.ipaddr = Some(p.text()),
            "url" => r.url = Some(p.text()),
            "action" => r.action = Some(p.text()),
            "policyid" => r.policyid = p.int(),
            "devid" => r.devid = Some(p.text()),
            "devname" => r.devname = Some(p.text()),
            "vd" => r.vd = Some(p.text()),
            "catdesc" => r.catdesc = Some(p.text()),
            "cat" => r.cat = p.int(),
            "user" | "unauthuser" if r.user.is_none() => r.user = Some(p.text()),
            "srcname" => r.srcname = Some(p.text()),
            "srcmac" if r.srcmac.is_none() => r.srcmac = Some(p.text()),
            "eventtime" => {
                if let Some(n) = p.int() {
                    r.etime = if n > 100_000_000_000_000 {
                        n / 1_000_000_000
                    } else if n > 100_000_000_000 {
                        n / 1000
                    } else {
                        n
                    };
                }
            }
            "date" => date = Some(p.value),
            "time" => time = Some(p.value),
            "tz" => tz = Some(p.value),
            _ => {}
        }
        true
    })
    .is_some();
    if !ok {
        return (
            Row {
                ltype: 99,
                etime: now_s,
                raw: line.to_string(),
                from_client,
                ..Default::default()
            },
            false,
        );
    }
    r.raw = line.to_string();
    if r.etime == 0 {
        if let (Some(d), Some(t)) = (&date, &time) {
            let tzm = tz.as_deref().and_then(parse_tz).unwrap_or(tz_minutes);
            r.etime =
                fortilab_core::clock::parse_date_time(&format!("{d} {t}"), tzm).unwrap_or(now_s);
        } else {
            r.etime = now_s;
        }
    }
    r.ltype = classify(&r.log_type, &r.subtype, from_client);
    (r, true)
}

fn parse_tz(s: &str) -> Option<i32> {
    let s = s.trim();
    let (sign, rest) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = rest[..2].parse().ok()?;
    let m: i32 = rest[2..].parse().ok()?;
    Some(sign * (h * 60 + m))
}

fn ip_col(s: &Option<String>) -> Value {
    match s {
        Some(t) => match t.parse::<IpAddr>() {
            Ok(ip) => ip_value(ip),
            Err(_) => Value::Text(t.clone()),
        },
        None => Value::Null,
    }
}

/// Columns of one inserted row.
const COLS: &str = "id,dev,seq,rtime,ltype,type,subtype,logid,level,srcip,dstip,srcport,dstport,hostname,url,action,policyid,devid,devname,vd,etime,catdesc,cat,user";
const NCOLS: usize = 24;

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

/// Registers `lf(raw, key)`: a field of the raw line (filters on fields without a column).
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "lf",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let raw = ctx.get_raw(0).as_str().unwrap_or_default();
            let key = ctx.get_raw(1).as_str().unwrap_or_default();
            Ok(field_of(raw, key))
        },
    )
}

/// The value of `key` in a raw FortiOS line (its first occurrence at a field boundary), parsing
/// only that field.
pub fn field_of(raw: &str, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let kb = key.as_bytes();
    let bytes = raw.as_bytes();
    let mut start = 0;
    while let Some(pos) = raw[start..].find(key) {
        let at = start + pos;
        let end = at + kb.len();
        if bytes.get(end) == Some(&b'=')
            && (at == 0 || matches!(bytes[at - 1], b' ' | b'\t' | b'>'))
        {
            let mut found = None;
            for_each_pair(&raw[at..], |p| {
                found = Some(p.text());
                false
            })?;
            return found;
        }
        start = end;
    }
    None
}

/// Tables outside the log segments.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seqs(dev TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, json TEXT NOT NULL);
";

/// A log segment: table `logs_NNNNNN` (typed columns) and `raws_NNNNNN` (the raw lines, by
/// the same id). The segment being filled has no secondary indexes (appends only); a full one
/// is sealed: its indexes are built in one pass each ([`index_sql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    n: u32,
    sealed: bool,
}

impl Seg {
    /// Its table of typed columns (`logs_NNNNNN`).
    fn logs_table(&self) -> String {
        seg_name(self.n)
    }
    /// Its table of raw lines (`raws_NNNNNN`).
    fn raws_table(&self) -> String {
        format!("raws_{:06}", self.n)
    }
}

/// The name of log segment `n`'s table of typed columns.
fn seg_name(n: u32) -> String {
    format!("logs_{n:06}")
}

fn segment_sql(seg: Seg) -> String {
    let (t, r) = (seg.logs_table(), seg.raws_table());
    format!(
        "CREATE TABLE IF NOT EXISTS {t}(
  id INTEGER PRIMARY KEY,
  dev TEXT NOT NULL,
  seq INTEGER,
  rtime INTEGER NOT NULL,
  ltype INTEGER NOT NULL,
  type TEXT COLLATE NOCASE,
  subtype TEXT COLLATE NOCASE,
  logid TEXT,
  level TEXT COLLATE NOCASE,
  srcip,
  dstip,
  srcport INTEGER,
  dstport INTEGER,
  hostname TEXT COLLATE NOCASE,
  url TEXT COLLATE NOCASE,
  action TEXT COLLATE NOCASE,
  policyid INTEGER,
  devid TEXT COLLATE NOCASE,
  devname TEXT COLLATE NOCASE,
  vd TEXT COLLATE NOCASE,
  etime INTEGER NOT NULL,
  catdesc TEXT COLLATE NOCASE,
  cat INTEGER,
  user TEXT COLLATE NOCASE
);
CREATE TABLE IF NOT EXISTS {r}(id INTEGER PRIMARY KEY, raw TEXT NOT NULL);
"
    )
}

/// The indexes of a sealed segment (with the log type, so a count by filter and type reads
/// the index only).
fn index_sql(seg: Seg) -> String {
    let t = seg.logs_table();
    format!(
        "CREATE INDEX IF NOT EXISTS {t}_srcip ON {t}(srcip, ltype);
CREATE INDEX IF NOT EXISTS {t}_dstip ON {t}(dstip, ltype);
CREATE INDEX IF NOT EXISTS {t}_type_time ON {t}(ltype, etime);
CREATE INDEX IF NOT EXISTS {t}_hostname ON {t}(hostname, ltype);
ANALYZE {t};
"
    )
}

/// Opens a connection with a bounded page cache (`cache_kib`) and map (`mmap_bytes`).
fn open_conn(path: &Path, cache_kib: u32, mmap_bytes: u64) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Only takes effect when the database is created (before WAL mode).
    conn.pragma_update(None, "page_size", 65536)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 1024)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib.max(1024)))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "analysis_limit", 1000)?;
    // Readers may read the start of the file through the map instead of copying 64 KiB pages;
    // bounded, because every mapped page read stays in the process's RSS.
    conn.pragma_update(None, "mmap_size", mmap_bytes.min(i64::MAX as u64) as i64)?;
    register_functions(&conn)?;
    Ok(conn)
}

/// What a search selects.
#[derive(Debug, Clone, Default)]
pub struct SearchSpec {
    /// Log type codes (empty: all).
    pub ltypes: Vec<i64>,
    /// Device serials or names (empty: all devices).
    pub devices: Vec<String>,
    pub filter: Option<Expr>,
    pub case_sensitive: bool,
    /// Event time range, Unix seconds, inclusive.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Newest first (`time-order desc`, the default).
    pub desc: bool,
}

impl SearchSpec {
    /// Whether the filter has (at its top level) an equality, range or CIDR on an indexed
    /// column: then the search reads that index and sorts the matches, instead of walking the
    /// table newest-first and testing every row.
    pub fn selective(&self) -> bool {
        fn sel(e: &Expr) -> bool {
            match e {
                Expr::And(v) => v.iter().any(sel),
                Expr::Cond {
                    field,
                    op: filter::Op::Eq,
                    value,
                } => {
                    matches!(field.as_str(), "srcip" | "dstip")
                        || (field == "hostname" && !value.contains('*'))
                }
                _ => false,
            }
        }
        self.filter.as_ref().map(sel).unwrap_or(false)
    }

    fn where_clause(&self) -> Result<(String, Vec<Value>), StoreError> {
        let mut parts: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if !self.ltypes.is_empty() {
            let list: Vec<String> = self.ltypes.iter().map(|c| c.to_string()).collect();
            // With a selective indexed filter, keep the planner off the (ltype, etime) index.
            let plus = if self.selective() { "+" } else { "" };
            parts.push(format!("{plus}ltype IN ({})", list.join(",")));
        }
        if !self.devices.is_empty() {
            let mut ors = Vec::new();
            for d in &self.devices {
                params.push(Value::Text(d.clone()));
                let n = params.len();
                ors.push(format!("devid = ?{n} OR devname = ?{n} OR dev = ?{n}"));
            }
            parts.push(format!("({})", ors.join(" OR ")));
        }
        if let Some(s) = self.start {
            params.push(Value::Integer(s));
            parts.push(format!("etime >= ?{}", params.len()));
        }
        if let Some(e) = self.end {
            params.push(Value::Integer(e));
            parts.push(format!("etime <= ?{}", params.len()));
        }
        if let Some(f) = &self.filter {
            let sql = filter::to_sql(f, self.case_sensitive, params.len())?;
            parts.push(sql.text);
            params.extend(sql.params);
        }
        let w = if parts.is_empty() {
            "1".to_string()
        } else {
            parts.join(" AND ")
        };
        Ok((w, params))
    }
}

/// A stored log returned by a search.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: i64,
    pub dev: String,
    pub seq: Option<i64>,
    pub ltype: i64,
    pub raw: String,
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

/// Key/value updates written in the same transaction as a batch (IOC state).
pub type KvUpdates = Vec<(String, Option<String>)>;

/// One batch waiting for the writer.
struct Batch {
    dev: String,
    rows: Vec<Row>,
    rtime: i64,
    /// The sender's last sequence after this batch (sequenced senders only).
    last: Option<u64>,
    kv: KvUpdates,
    durability: Durability,
    done: mpsc::SyncSender<Result<(), String>>,
}

type Call = Box<dyn FnOnce(&mut Writer) + Send>;

enum Job {
    Batch(Batch),
    Call(Call),
}

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

/// The writer thread's connection and segment state.
struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    opts: StoreOptions,
    hot: u32,
    hot_rows: u64,
    next_id: i64,
    /// When the oldest commit whose WAL frames are not fsynced yet was made.
    unsynced_since: Option<std::time::Instant>,
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

fn is_no_table(e: &rusqlite::Error) -> bool {
    e.to_string().contains("no such table")
}

impl Writer {
    fn create_segment(&mut self, n: u32) -> rusqlite::Result<()> {
        self.conn
            .execute_batch(&segment_sql(Seg { n, sealed: false }))?;
        self.hot = n;
        self.hot_rows = 0;
        Ok(())
    }

    /// Builds a full segment's indexes (one sorted pass each) in its own transaction.
    fn seal(&mut self, n: u32) -> rusqlite::Result<()> {
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
    fn commit_group(&mut self, group: &[Batch]) -> rusqlite::Result<Vec<u32>> {
        let (id0, hot0, rows0) = (self.next_id, self.hot, self.hot_rows);
        let fsync = self.group_needs_fsync(group);
        if !fsync {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        let res = self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            let mut created = Vec::new();
            self.insert_group(group, &mut created)?;
            self.conn.execute_batch("COMMIT")?;
            Ok(created)
        });
        if !fsync {
            // Back to FULL for everything else (acknowledged batches, sealing, retention).
            if let Err(e) = self.conn.pragma_update(None, "synchronous", "FULL") {
                tracing::error!(error = %e, "log store: synchronous=FULL not restored");
            }
        }
        match res {
            Ok(created) => {
                self.note_commit(fsync);
                Ok(created)
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

    fn insert_group(&mut self, group: &[Batch], created: &mut Vec<u32>) -> rusqlite::Result<()> {
        for b in group {
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
        Ok(())
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
    fn run(mut self, rx: mpsc::Receiver<Job>) {
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
                Ok(created) => {
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
                    for b in group {
                        let _ = b.done.send(Ok(()));
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

    fn segs(&self) -> Vec<Seg> {
        self.shared
            .segs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn drop_segment(&mut self, seg: Seg) -> rusqlite::Result<u64> {
        let t = seg.logs_table();
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
        self.shared
            .segs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.n != seg.n);
        self.conn.execute_batch(&format!(
            "BEGIN; DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {}; COMMIT;",
            seg.raws_table()
        ))?;
        self.shared
            .counters
            .segments_dropped
            .fetch_add(1, Ordering::Relaxed);
        Ok(n as u64)
    }

    /// Deletes rows with id below `cut` from a segment, 5,000 per transaction (at most
    /// `max_chunks` transactions).
    fn delete_below(&mut self, seg: Seg, cut: i64, max_chunks: usize) -> rusqlite::Result<u64> {
        let (t, r) = (seg.logs_table(), seg.raws_table());
        let mut deleted = 0u64;
        for _ in 0..max_chunks {
            let hi: Option<i64> = self.conn.query_row(
                &format!(
                    "SELECT max(id) FROM (SELECT id FROM {t} WHERE id < ?1 ORDER BY id LIMIT 5000)"
                ),
                params![cut],
                |r| r.get(0),
            )?;
            let Some(hi) = hi else { break };
            self.conn.execute_batch("BEGIN")?;
            let res = (|| {
                let n = self
                    .conn
                    .execute(&format!("DELETE FROM {t} WHERE id <= ?1"), params![hi])?;
                self.conn
                    .execute(&format!("DELETE FROM {r} WHERE id <= ?1"), params![hi])?;
                self.conn.execute_batch("COMMIT")?;
                Ok(n)
            })();
            match res {
                Ok(n) => deleted += n as u64,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        Ok(deleted)
    }

    fn size_bytes(&self) -> rusqlite::Result<u64> {
        size_of(&self.conn)
    }

    /// Retention (see [`Store::retain`]), on the writer thread.
    fn retain(
        &mut self,
        now_s: i64,
        max_age_s: Option<i64>,
        max_bytes: Option<u64>,
    ) -> rusqlite::Result<u64> {
        let hot = self.hot;
        let mut deleted = 0u64;
        if let Some(age) = max_age_s {
            // By arrival (lab) time, not event time: a lab replaying old logs keeps them.
            // Rows arrive in id order, so everything below the first young row is old.
            let cut = now_s - age;
            for seg in self.segs() {
                let t = seg.logs_table();
                let first_young: Option<i64> = self
                    .conn
                    .query_row(
                        &format!("SELECT id FROM {t} WHERE rtime >= ?1 ORDER BY id LIMIT 1"),
                        params![cut],
                        |r| r.get(0),
                    )
                    .optional()?;
                match first_young {
                    None if seg.n != hot => deleted += self.drop_segment(seg)?,
                    None => deleted += self.delete_below(seg, i64::MAX, usize::MAX)?,
                    Some(id) => {
                        deleted += self.delete_below(seg, id, usize::MAX)?;
                        break;
                    }
                }
            }
        }
        if let Some(max) = max_bytes {
            for _ in 0..100_000 {
                if self.size_bytes()? <= max {
                    break;
                }
                let Some(seg) = self.segs().first().copied() else {
                    break;
                };
                if seg.n != hot {
                    deleted += self.drop_segment(seg)?;
                    continue;
                }
                let n = self.delete_below(seg, i64::MAX, 1)?;
                deleted += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

fn size_of(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free) * size) as u64)
}

/// A read transaction (one snapshot across segments), ended on drop.
struct Snapshot<'a>(&'a Connection);

impl<'a> Snapshot<'a> {
    fn begin(conn: &'a Connection) -> Self {
        let _ = conn.execute_batch("BEGIN");
        Snapshot(conn)
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("COMMIT");
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

    /// Writes key/value entries durably (grouped with the next log commit).
    pub fn kv_put(&self, updates: &[(String, Option<String>)]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        self.send(Job::Batch(Batch {
            dev: String::new(),
            rows: Vec::new(),
            rtime: 0,
            last: None,
            kv: updates.to_vec(),
            durability: Durability::Acknowledged,
            done: done_tx,
        }))?;
        match done_rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Writer(e)),
            Err(_) => Err(StoreError::Writer("log store writer stopped".into())),
        }
    }

    /// Key/value entries whose key starts with `prefix`.
    pub fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.reader();
        let mut st =
            conn.prepare("SELECT key, json FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
        let hi = format!("{prefix}\u{10FFFF}");
        let rows = st.query_map(params![prefix, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn kv_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.reader();
        Ok(conn
            .query_row("SELECT json FROM kv WHERE key=?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// One page of a search, fanned out over the segments (newest first for `desc`).
    pub fn search(
        &self,
        spec: &SearchSpec,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Found>, StoreError> {
        let (w, params) = spec.where_clause()?;
        let order = if spec.desc { "DESC" } else { "ASC" };
        let segs = self.segments(spec.desc);
        let conn = self.reader();
        let _snap = Snapshot::begin(&conn);
        let mut out: Vec<Found> = Vec::new();
        let mut off = offset as u64;
        for seg in &segs {
            if out.len() >= limit {
                break;
            }
            if off > 0 {
                let c = match count_in(&conn, *seg, &w, &params) {
                    Ok(c) => c,
                    Err(e) if is_no_table(&e) => continue,
                    Err(e) => return Err(e.into()),
                };
                if c <= off {
                    off -= c;
                    continue;
                }
            }
            // With an indexed selective filter on a sealed segment, read that index and sort
            // the matches rather than walk the segment in id order.
            let plus = if seg.sealed && spec.selective() {
                "+"
            } else {
                ""
            };
            let (t, r) = (seg.logs_table(), seg.raws_table());
            let sql = format!(
                "SELECT {t}.id, dev, seq, ltype, (SELECT raw FROM {r} WHERE {r}.id = {t}.id) FROM {} WHERE {w} ORDER BY {plus}{t}.id {order} LIMIT {} OFFSET {off}",
                from(*seg, &w),
                limit - out.len()
            );
            off = 0;
            let mut st = match conn.prepare(&sql) {
                Ok(s) => s,
                Err(e) if is_no_table(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let rows = st.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                Ok(Found {
                    id: r.get(0)?,
                    dev: r.get(1)?,
                    seq: r.get(2)?,
                    ltype: r.get(3)?,
                    raw: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            })?;
            for r in rows {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// Number of logs matching a search.
    pub fn count(&self, spec: &SearchSpec) -> Result<u64, StoreError> {
        let (w, params) = spec.where_clause()?;
        let segs = self.segments(true);
        let conn = self.reader();
        let _snap = Snapshot::begin(&conn);
        let mut n = 0;
        for seg in &segs {
            match count_in(&conn, *seg, &w, &params) {
                Ok(c) => n += c,
                Err(e) if is_no_table(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// Visits stored logs of the given types in a time range, in insertion order, in pages
    /// (rescans). `f` returns false to stop.
    pub fn scan(
        &self,
        ltypes: &[i64],
        start: i64,
        end: i64,
        mut f: impl FnMut(&Found, &Row) -> bool,
    ) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let list: Vec<String> = ltypes.iter().map(|c| c.to_string()).collect();
        for seg in self.segments(false) {
            let (t, r) = (seg.logs_table(), seg.raws_table());
            let mut after = 0i64;
            loop {
                let page: Vec<(Found, i64)> = {
                    let conn = self.reader();
                    let st = conn.prepare(&format!(
                        "SELECT {t}.id, dev, seq, ltype, {r}.raw, rtime FROM {t} JOIN {r} ON {r}.id = {t}.id WHERE {t}.id > ?1 AND ltype IN ({}) AND etime BETWEEN ?2 AND ?3 ORDER BY {t}.id LIMIT 2000",
                        list.join(",")
                    ));
                    let mut st = match st {
                        Ok(s) => s,
                        Err(e) if is_no_table(&e) => break,
                        Err(e) => return Err(e.into()),
                    };
                    let rows = st.query_map(params![after, start, end], |r| {
                        Ok((
                            Found {
                                id: r.get(0)?,
                                dev: r.get(1)?,
                                seq: r.get(2)?,
                                ltype: r.get(3)?,
                                raw: r.get(4)?,
                            },
                            r.get::<_, i64>(5)?,
                        ))
                    })?;
                    rows.collect::<Result<Vec<_>, _>>()?
                };
                if page.is_empty() {
                    break;
                }
                for (found, rtime) in &page {
                    after = found.id;
                    n += 1;
                    let (row, _) =
                        parse_row(&found.raw, found.ltype == 5 || found.ltype == 6, *rtime, 0);
                    if !f(found, &row) {
                        return Ok(n);
                    }
                }
            }
        }
        Ok(n)
    }

    /// Rows per sender: (rows, distinct sequence numbers, min seq, max seq).
    pub fn seq_stats(&self, dev: &str) -> Result<(u64, u64, u64, u64), StoreError> {
        let segs = self.segments(false);
        let union: Vec<String> = segs
            .iter()
            .map(|s| format!("SELECT seq FROM {} WHERE dev=?1", s.logs_table()))
            .collect();
        let conn = self.reader();
        let r = conn.query_row(
            &format!("SELECT count(*), count(DISTINCT seq), coalesce(min(seq),0), coalesce(max(seq),0) FROM ({})", union.join(" UNION ALL ")),
            params![dev],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64)),
        )?;
        Ok(r)
    }

    /// Total stored logs.
    pub fn total(&self) -> Result<u64, StoreError> {
        let segs = self.segments(false);
        let conn = self.reader();
        let _snap = Snapshot::begin(&conn);
        let mut n = 0u64;
        for seg in &segs {
            match conn.query_row(
                &format!("SELECT count(*) FROM {}", seg.logs_table()),
                [],
                |r| r.get::<_, i64>(0),
            ) {
                Ok(c) => n += c as u64,
                Err(e) if is_no_table(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// The newest stored log of a source IP from a FortiGate (notification routing).
    pub fn last_fortigate_for(&self, srcip: &str) -> Result<Option<String>, StoreError> {
        let Ok(ip) = srcip.parse::<IpAddr>() else {
            return Ok(None);
        };
        let v = ip_value(ip);
        let segs = self.segments(true);
        let conn = self.reader();
        for seg in &segs {
            let r = conn
                .query_row(
                    &format!("SELECT dev FROM {} WHERE srcip=?1 AND ltype NOT IN (5,6) ORDER BY id DESC LIMIT 1", seg.logs_table()),
                    params![v],
                    |r| r.get(0),
                )
                .optional();
            match r {
                Ok(Some(d)) => return Ok(Some(d)),
                Ok(None) => {}
                Err(e) if is_no_table(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Retention: deletes logs that arrived more than `max_age_s` ago (lab time) and, while the
    /// database is larger than `max_bytes`, the oldest logs (whole segments where it can, else
    /// in chunks). Returns the number deleted.
    pub fn retain(
        &self,
        now_s: i64,
        max_age_s: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        Ok(self.on_writer(move |w| w.retain(now_s, max_age_s, max_bytes))??)
    }

    /// Bytes in use by the database (pages minus free pages).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let conn = self.reader();
        Ok(size_of(&conn)?)
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

/// The FROM clause of a segment query: the raw lines are joined only when the filter reads a
/// field of the raw line (`lf(raw, ...)`).
fn from(seg: Seg, w: &str) -> String {
    let (t, r) = (seg.logs_table(), seg.raws_table());
    if w.contains("raw") {
        format!("{t} JOIN {r} ON {r}.id = {t}.id")
    } else {
        t
    }
}

fn count_in(conn: &Connection, seg: Seg, w: &str, params: &[Value]) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {} WHERE {w}", from(seg, w)),
        rusqlite::params_from_iter(params.iter()),
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64, src: &str) -> String {
        format!(
            "date=2021-03-04 time=10:11:{:02} devname=\"FGT-LAB\" devid=\"FGVM01TM00000001\" eventtime={} tz=\"+0000\" logid=\"0316013056\" type=\"utm\" subtype=\"webfilter\" eventtype=\"ftgd_blk\" level=\"warning\" vd=\"root\" policyid=1 sessionid={i} srcip={src} srcport=5000 dstip=89.1.1.1 dstport=80 hostname=\"www.example.com\" action=\"passthrough\" url=\"/p{i}\" cat=26 catdesc=\"Malicious Websites\"",
            i % 60,
            1_614_852_000_000_000_000u64 + i * 1_000_000_000
        )
    }

    fn rows(lines: &[String]) -> Vec<Row> {
        lines.iter().map(|l| parse_row(l, false, 0, 0).0).collect()
    }

    #[test]
    fn parses_typed_columns() {
        let (r, ok) = parse_row(&line(3, "10.115.2.52"), false, 0, 0);
        assert!(ok);
        assert_eq!(r.ltype, 2);
        assert_eq!(r.srcip.as_deref(), Some("10.115.2.52"));
        assert_eq!(r.policyid, Some(1));
        assert_eq!(r.etime, 1_614_852_003);
        let (r, ok) = parse_row("garbage without pairs", false, 77, 0);
        assert!(!ok);
        assert_eq!((r.ltype, r.etime), (99, 77));
        let (r, _) = parse_row(
            "date=2021-03-04 time=10:00:00 tz=\"-0100\" type=\"traffic\" subtype=\"forward\"",
            true,
            0,
            0,
        );
        assert_eq!(r.ltype, 6);
        assert_eq!(
            r.etime,
            fortilab_core::clock::parse_date_time("2021-03-04 11:00:00", 0).unwrap()
        );
        assert_eq!(field_of("a=1 xa=2 b=\"q r\"", "b").as_deref(), Some("q r"));
        assert_eq!(field_of("a=1 xa=2", "a").as_deref(), Some("1"));
        assert_eq!(field_of("xa=2", "a"), None);
    }

    /// A full disk (simulated with SQLite's `max_page_count`, which fails a commit with
    /// SQLITE_FULL exactly as a full file system does) is an error naming the database file;
    /// nothing of the failed batch is acknowledged, and the store takes it once space returns.
    #[test]
    fn a_full_disk_names_the_file_and_the_store_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let lines: Vec<String> = (1..=3000).map(|i| line(i, "10.115.2.52")).collect();
        assert_eq!(
            s.commit("FGT1", 1, rows(&lines[..10]), 0, |_| vec![])
                .unwrap(),
            10
        );
        let pages: i64 = s
            .on_writer(|w| {
                let n: i64 = w.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                w.conn
                    .query_row(&format!("PRAGMA max_page_count={n}"), [], |r| {
                        r.get::<_, i64>(0)
                    })?;
                Ok::<_, rusqlite::Error>(n)
            })
            .unwrap()
            .unwrap();
        assert!(pages > 0);
        let e = s
            .commit("FGT1", 11, rows(&lines[10..]), 0, |_| vec![])
            .unwrap_err()
            .to_string();
        let file = dir.path().display().to_string();
        assert!(e.contains(&file), "the error names the store file: {e}");
        assert!(e.contains("full"), "{e}");
        assert_eq!(s.last_seq("FGT1"), 10, "nothing of the failed batch counts");
        // Space returns.
        s.on_writer(|w| {
            w.conn
                .query_row("PRAGMA max_page_count=1073741823", [], |r| {
                    r.get::<_, i64>(0)
                })
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            s.commit("FGT1", 11, rows(&lines[10..]), 0, |_| vec![])
                .unwrap(),
            3000
        );
        assert_eq!(s.seq_stats("FGT1").unwrap(), (3000, 3000, 1, 3000));
    }

    #[test]
    fn exactly_once_across_reopen_and_resend() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=10).map(|i| line(i, "10.115.2.52")).collect();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(
                s.commit("FGT1", 1, rows(&lines[..6]), 0, |_| vec![])
                    .unwrap(),
                6
            );
            // A resend overlapping what is stored keeps only the new lines.
            assert_eq!(
                s.commit("FGT1", 4, rows(&lines[3..8]), 0, |_| vec![])
                    .unwrap(),
                8
            );
            assert_eq!(s.counters.duplicates.load(Ordering::Relaxed), 3);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.last_seq("FGT1"), 8);
        // Entirely duplicate batch.
        assert_eq!(
            s.commit("FGT1", 1, rows(&lines[..8]), 0, |_| vec![])
                .unwrap(),
            8
        );
        assert_eq!(
            s.commit("FGT1", 9, rows(&lines[8..]), 0, |_| vec![(
                "k".into(),
                Some("1".into())
            )])
            .unwrap(),
            10
        );
        assert_eq!(s.seq_stats("FGT1").unwrap(), (10, 10, 1, 10));
        assert_eq!(s.kv_get("k").unwrap().as_deref(), Some("1"));
        // Unsequenced (syslog) rows are all stored.
        s.commit("syslog", 0, rows(&lines[..2]), 0, |_| vec![])
            .unwrap();
        s.commit("syslog", 0, rows(&lines[..2]), 0, |_| vec![])
            .unwrap();
        assert_eq!(s.total().unwrap(), 14);
    }

    #[test]
    fn search_count_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut lines: Vec<String> = (1..=20).map(|i| line(i, "10.115.2.52")).collect();
        lines.extend((21..=30).map(|i| line(i, "10.115.2.60")));
        s.commit("FGT1", 1, rows(&lines[..20]), 100, |_| vec![])
            .unwrap();
        s.commit("FGT1", 21, rows(&lines[20..]), 200, |_| vec![])
            .unwrap();
        let spec = SearchSpec {
            ltypes: vec![2],
            filter: crate::filter::parse("srcip==10.115.2.60").unwrap(),
            desc: true,
            ..Default::default()
        };
        assert_eq!(s.count(&spec).unwrap(), 10);
        let page = s.search(&spec, 3, 0).unwrap();
        assert_eq!(
            page.iter().map(|f| f.seq.unwrap()).collect::<Vec<_>>(),
            vec![30, 29, 28]
        );
        let page = s.search(&spec, 3, 9).unwrap();
        assert_eq!(page.len(), 1);
        let spec2 = SearchSpec {
            ltypes: vec![1],
            ..Default::default()
        };
        assert_eq!(s.count(&spec2).unwrap(), 0);
        let spec3 = SearchSpec {
            devices: vec!["FGT-LAB".into()],
            start: Some(1_614_852_010),
            end: Some(1_614_852_019),
            ..Default::default()
        };
        assert_eq!(s.count(&spec3).unwrap(), 10);
        assert_eq!(
            s.last_fortigate_for("10.115.2.60").unwrap().as_deref(),
            Some("FGT1")
        );
        // Age: logs that arrived more than 50 s before 210 go.
        let deleted = s.retain(210, Some(50), None).unwrap();
        assert_eq!(deleted, 20);
        assert_eq!(s.total().unwrap(), 10);
        assert_eq!(s.retain(210, Some(50), None).unwrap(), 0);
        let deleted = s.retain(210, None, Some(1)).unwrap();
        assert_eq!(deleted, 10);
        // The rescan scan visits only the asked types.
        s.commit("FGT1", 31, rows(&[line(31, "10.115.2.9")]), 0, |_| vec![])
            .unwrap();
        let mut seen = 0;
        s.scan(&[2], 0, i64::MAX, |_, r| {
            assert_eq!(r.srcip.as_deref(), Some("10.115.2.9"));
            seen += 1;
            true
        })
        .unwrap();
        assert_eq!(seen, 1);
    }
    #[test]
    fn sqlite_memory_is_bounded() {
        // Issue 15: 256 MiB page caches and 2 GiB maps let the FortiAnalyzer's RSS grow with
        // the store. Every connection now has a bounded cache and the writer no map.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for r in &s.readers {
            let c = r.lock().unwrap();
            let cache: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
            assert_eq!(cache, -i64::from(DEFAULT_READER_CACHE_KIB));
            let mmap: i64 = c.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
            assert_eq!(mmap as u64, DEFAULT_READER_MMAP_BYTES);
        }
        let w = open_conn(&dir.path().join("x.db"), 0, 0).unwrap();
        let cache: i64 = w.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(cache, -1024, "a floor of 1 MiB");
        let mmap: i64 = w.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
        assert_eq!(mmap, 0);
    }

    fn small(dir: &Path, segment_rows: u64) -> Store {
        Store::open_with(
            dir,
            StoreOptions {
                segment_rows,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Unacknowledged (syslog) lines are committed without an fsync of their own and the WAL
    /// is synced within the window; an acknowledged batch is synced at its commit and covers
    /// the unacknowledged lines before it.
    #[test]
    fn unacknowledged_lines_are_synced_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(
            dir.path(),
            StoreOptions {
                sync_window: std::time::Duration::from_millis(200),
                ..Default::default()
            },
        )
        .unwrap();
        let unsynced = |s: &Store| s.on_writer(|w| w.unsynced_since.is_some()).unwrap();
        let ls: Vec<String> = (0..10).map(|i| line(i, "10.0.0.1")).collect();
        let syslog = |s: &Store| {
            s.submit_with(
                Durability::Unacknowledged,
                "SYSLOG-1",
                0,
                rows(&ls),
                1,
                |_| Vec::new(),
            )
            .unwrap()
            .wait()
            .unwrap()
        };
        syslog(&store);
        assert!(unsynced(&store), "committed without an fsync");
        // Nothing else to do: the writer syncs the WAL when the window ends.
        let t = std::time::Instant::now();
        while unsynced(&store) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "never synced"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // An acknowledged batch fsyncs at its commit, covering what came before.
        syslog(&store);
        assert!(unsynced(&store));
        store
            .commit("FGT1", 1, rows(&ls), 1, |_| Vec::new())
            .unwrap();
        assert!(!unsynced(&store));
        assert_eq!(store.total().unwrap(), 30);
        // With a zero window every commit is synced.
        drop(store);
        let store = Store::open_with(
            dir.path(),
            StoreOptions {
                sync_window: std::time::Duration::ZERO,
                ..Default::default()
            },
        )
        .unwrap();
        syslog(&store);
        assert!(!unsynced(&store));
        assert_eq!(store.total().unwrap(), 40);
    }

    fn seqs_of(page: &[Found]) -> Vec<i64> {
        page.iter().map(|f| f.seq.unwrap()).collect()
    }

    #[test]
    fn segments_fan_out_in_order_with_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=23).map(|i| line(i, "10.115.2.52")).collect();
        {
            let s = small(dir.path(), 4);
            s.commit("FGT1", 1, rows(&lines[..10]), 100, |_| vec![])
                .unwrap();
            s.commit("FGT1", 11, rows(&lines[10..13]), 100, |_| vec![])
                .unwrap();
            assert_eq!(s.segment_count(), 4);
        }
        // Reopened: the last segment keeps filling, ids continue.
        let s = small(dir.path(), 4);
        assert_eq!(s.last_seq("FGT1"), 13);
        s.commit("FGT1", 14, rows(&lines[13..]), 300, |_| vec![])
            .unwrap();
        assert_eq!(s.segment_count(), 6);
        assert_eq!(s.total().unwrap(), 23);
        let all = SearchSpec {
            desc: true,
            ..Default::default()
        };
        for off in 0..25 {
            let page = s.search(&all, 5, off).unwrap();
            let want: Vec<i64> = (1..=23i64).rev().skip(off).take(5).collect();
            assert_eq!(seqs_of(&page), want, "desc offset {off}");
            let ids: Vec<i64> = page.iter().map(|f| f.id).collect();
            assert!(ids.windows(2).all(|w| w[0] > w[1]));
        }
        let asc = SearchSpec::default();
        assert_eq!(seqs_of(&s.search(&asc, 3, 11).unwrap()), vec![12, 13, 14]);
        assert_eq!(s.count(&all).unwrap(), 23);
        // An indexed filter across segments.
        let spec = SearchSpec {
            filter: crate::filter::parse("srcip==10.115.2.52 and url=\"/p7\"").unwrap(),
            desc: true,
            ..Default::default()
        };
        assert_eq!(seqs_of(&s.search(&spec, 10, 0).unwrap()), vec![7]);
        assert_eq!(s.count(&spec).unwrap(), 1);
        // Sealed segments (the two closed since reopening) and the hot one answer alike, also
        // for a field only the raw line has.
        // (Sealing runs on the writer after the acknowledgements: wait for it.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while s.counters.segments_sealed.load(Ordering::Relaxed) < 2 {
            assert!(std::time::Instant::now() < deadline, "segments not sealed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let sealed: Vec<bool> = s.segments(false).iter().map(|g| g.sealed).collect();
        assert_eq!(sealed, vec![true, true, true, true, true, false]);
        for k in [3u64, 15, 22] {
            let spec = SearchSpec {
                filter: crate::filter::parse(&format!("sessionid={k}")).unwrap(),
                desc: true,
                ..Default::default()
            };
            assert_eq!(seqs_of(&s.search(&spec, 10, 0).unwrap()), vec![k as i64]);
            let page = s.search(&spec, 10, 0).unwrap();
            assert_eq!(page[0].raw, lines[k as usize - 1]);
        }
        let mut seen = Vec::new();
        s.scan(&[2], 0, i64::MAX, |f, _| {
            seen.push(f.seq.unwrap());
            true
        })
        .unwrap();
        assert_eq!(seen, (1..=23).collect::<Vec<_>>());
        assert_eq!(s.seq_stats("FGT1").unwrap(), (23, 23, 1, 23));
        // Age retention drops whole old segments and trims the one that straddles the cut.
        let deleted = s.retain(350, Some(100), None).unwrap();
        assert_eq!(deleted, 13);
        assert!(s.counters.segments_dropped.load(Ordering::Relaxed) >= 3);
        assert_eq!(s.total().unwrap(), 10);
        assert_eq!(seqs_of(&s.search(&asc, 2, 0).unwrap()), vec![14, 15]);
        // Size retention empties everything but keeps a segment to write to.
        assert_eq!(s.retain(350, None, Some(1)).unwrap(), 10);
        assert!(s.segment_count() >= 1);
        s.commit("FGT1", 24, rows(&[line(24, "10.115.2.9")]), 400, |_| vec![])
            .unwrap();
        assert_eq!(s.total().unwrap(), 1);
        assert_eq!(s.last_seq("FGT1"), 24);
    }

    #[test]
    fn concurrent_senders_group_commit_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(small(dir.path(), 300));
        let lines: Vec<String> = (1..=40).map(|i| line(i, "10.115.2.52")).collect();
        std::thread::scope(|sc| {
            for k in 0..4 {
                let s = s.clone();
                let lines = &lines;
                sc.spawn(move || {
                    let dev = format!("FGT{k}");
                    let mut seq = 1;
                    for b in 0..25 {
                        // Every fifth batch is resent (a lost ack): its lines are dropped.
                        let first = if b % 5 == 4 { seq - 40 } else { seq };
                        let last = s
                            .commit(&dev, first, rows(lines), 1, |rows| {
                                vec![(format!("k{k}"), Some(rows.len().to_string()))]
                            })
                            .unwrap();
                        seq = last + 1;
                    }
                    s.kv_put(&[(format!("done{k}"), Some("1".into()))]).unwrap();
                });
            }
        });
        for k in 0..4 {
            let dev = format!("FGT{k}");
            assert_eq!(s.last_seq(&dev), 800);
            assert_eq!(s.seq_stats(&dev).unwrap(), (800, 800, 1, 800));
            assert_eq!(s.kv_get(&format!("k{k}")).unwrap().as_deref(), Some("40"));
            assert_eq!(s.kv_get(&format!("done{k}")).unwrap().as_deref(), Some("1"));
        }
        assert_eq!(s.counters.duplicates.load(Ordering::Relaxed), 4 * 5 * 40);
        assert_eq!(s.total().unwrap(), 3200);
        assert!(s.counters.commits.load(Ordering::Relaxed) <= 100);
        drop(s);
        let s = small(dir.path(), 300);
        assert_eq!(s.last_seq("FGT3"), 800);
        assert_eq!(s.total().unwrap(), 3200);
    }

    #[test]
    fn a_store_from_before_segments_is_read_and_extended() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join("logs.db")).unwrap();
            let legacy = segment_sql(Seg {
                n: 9,
                sealed: false,
            })
            .replace("logs_000009(", "logs(")
            .replace(
                "  user TEXT COLLATE NOCASE\n",
                "  user TEXT COLLATE NOCASE,\n  raw TEXT NOT NULL\n",
            );
            c.execute_batch(&legacy).unwrap();
            c.execute_batch("CREATE INDEX logs_srcip ON logs(srcip)")
                .unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute(
                "INSERT INTO logs(dev,seq,rtime,ltype,etime,raw,srcip) VALUES('FGT1',1,5,2,5,?1,?2)",
                params![line(1, "10.115.2.52"), ip_value("10.115.2.52".parse().unwrap())],
            )
            .unwrap();
            c.execute("INSERT INTO seqs(dev,last) VALUES('FGT1',1)", [])
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.last_seq("FGT1"), 1);
        s.commit("FGT1", 2, rows(&[line(2, "10.115.2.52")]), 9, |_| vec![])
            .unwrap();
        assert_eq!(s.segment_count(), 2);
        let spec = SearchSpec {
            filter: crate::filter::parse("srcip==10.115.2.52").unwrap(),
            desc: true,
            ..Default::default()
        };
        assert_eq!(seqs_of(&s.search(&spec, 10, 0).unwrap()), vec![2, 1]);
        assert_eq!(
            s.last_fortigate_for("10.115.2.52").unwrap().as_deref(),
            Some("FGT1")
        );
    }

    #[test]
    fn pair_parser_matches_the_record_parser() {
        use fortilab_core::logfmt::LogRecord;
        let lines = [
            line(7, "10.115.2.52"),
            "<189>date=2021-03-04 a=\"x \\\"y\\\" z\" n=007 m=+5 ip=2001:DB8::1 e=\"\"".to_string(),
            "k=1 broken".to_string(),
            "k=\"unterminated".to_string(),
            "=1".to_string(),
            "   ".to_string(),
        ];
        for l in &lines {
            let rec = LogRecord::parse(l);
            let mut pairs = Vec::new();
            let ok = for_each_pair(l, |p| {
                pairs.push((p.key.to_string(), p.text()));
                true
            });
            match rec {
                Ok(rec) => {
                    assert!(ok.is_some(), "{l}");
                    let want: Vec<(String, String)> = rec
                        .fields()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.as_text().into_owned()))
                        .collect();
                    assert_eq!(pairs, want, "{l}");
                }
                Err(_) => assert!(ok.is_none(), "{l}"),
            }
        }
        assert_eq!(field_of("<5>a=1 b=\"q r\"", "b").as_deref(), Some("q r"));
        assert_eq!(field_of("ab=1 b=2", "b").as_deref(), Some("2"));
        assert_eq!(field_of("ab=1", "b"), None);
    }
}
