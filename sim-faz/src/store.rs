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
use std::sync::Mutex;

use fortilab_core::logfmt::{LogRecord, LogValue};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use crate::filter::{self, ip_value, Expr};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("log store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("log store: {0}")]
    Filter(#[from] filter::FilterError),
    #[error("log store {path}: {msg}")]
    Open { path: String, msg: String },
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

fn take_text(v: &LogValue) -> String {
    match v {
        LogValue::Str(s) | LogValue::Bare(s) => s.clone(),
        other => other.as_text().into_owned(),
    }
}

/// Parses one FortiOS line into a row. A line that does not parse is kept as type `unknown`
/// (nothing acknowledged is dropped) and reported as `Err` alongside.
pub fn parse_row(line: &str, from_client: bool, now_s: i64, tz_minutes: i32) -> (Row, bool) {
    let line = line.trim_end_matches(['\r', '\n']);
    let rec = match LogRecord::parse(line) {
        Ok(r) => r,
        Err(_) => {
            return (
                Row {
                    ltype: 99,
                    etime: now_s,
                    raw: line.to_string(),
                    from_client,
                    ..Default::default()
                },
                false,
            )
        }
    };
    let mut r = Row {
        raw: line.to_string(),
        from_client,
        etime: 0,
        ..Default::default()
    };
    let mut date = None;
    let mut time = None;
    let mut tz = None;
    for (k, v) in rec.fields() {
        match k.as_str() {
            "type" => r.log_type = take_text(v),
            "subtype" => r.subtype = take_text(v),
            "logid" => r.logid = Some(take_text(v)),
            "level" => r.level = Some(take_text(v)),
            "srcip" => r.srcip = Some(take_text(v)),
            "dstip" => r.dstip = Some(take_text(v)),
            "srcport" => r.srcport = v.as_i64(),
            "dstport" => r.dstport = v.as_i64(),
            "hostname" => r.hostname = Some(take_text(v)),
            "qname" => r.qname = Some(take_text(v)),
            "ipaddr" => r.ipaddr = Some(take_text(v)),
            "url" => r.url = Some(take_text(v)),
            "action" => r.action = Some(take_text(v)),
            "policyid" => r.policyid = v.as_i64(),
            "devid" => r.devid = Some(take_text(v)),
            "devname" => r.devname = Some(take_text(v)),
            "vd" => r.vd = Some(take_text(v)),
            "catdesc" => r.catdesc = Some(take_text(v)),
            "cat" => r.cat = v.as_i64(),
            "user" | "unauthuser" if r.user.is_none() => r.user = Some(take_text(v)),
            "srcname" => r.srcname = Some(take_text(v)),
            "srcmac" if r.srcmac.is_none() => r.srcmac = Some(take_text(v)),
            "eventtime" => {
                if let Some(n) = v.as_i64() {
                    r.etime = if n > 100_000_000_000_000 {
                        n / 1_000_000_000
                    } else if n > 100_000_000_000 {
                        n / 1000
                    } else {
                        n
                    };
                }
            }
            "date" => date = Some(take_text(v)),
            "time" => time = Some(take_text(v)),
            "tz" => tz = Some(take_text(v)),
            _ => {}
        }
    }
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
    if rest.len() != 4 {
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
const COLS: &str = "dev,seq,rtime,ltype,type,subtype,logid,level,srcip,dstip,srcport,dstport,hostname,url,action,policyid,devid,devname,vd,etime,catdesc,cat,user,raw";
const NCOLS: usize = 24;
/// Rows per multi-row INSERT (24 × 64 parameters, under SQLite's limit).
const MULTI_ROWS: usize = 64;

fn insert_sql(rows: usize) -> String {
    let mut s = format!("INSERT INTO logs({COLS}) VALUES");
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
    b!(&r.raw);
    Ok(())
}

/// Registers `lf(raw, key)`: a field of the raw line (filters on fields without a column).
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "lf",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let raw: String = ctx.get(0).unwrap_or_default();
            let key: String = ctx.get(1).unwrap_or_default();
            Ok(field_of(&raw, &key))
        },
    )
}

/// The value of `key` in a raw FortiOS line (without allocating a full record for misses).
pub fn field_of(raw: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    let mut start = 0;
    while let Some(pos) = raw[start..].find(&needle) {
        let at = start + pos;
        if at == 0 || raw.as_bytes()[at - 1] == b' ' || raw.as_bytes()[at - 1] == b'>' {
            let rec = LogRecord::parse(&raw[at..]).ok()?;
            return rec.text(key).map(|c| c.into_owned());
        }
        start = at + needle.len();
    }
    None
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs(
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
  user TEXT COLLATE NOCASE,
  raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_srcip ON logs(srcip);
CREATE INDEX IF NOT EXISTS logs_dstip ON logs(dstip);
CREATE INDEX IF NOT EXISTS logs_type_time ON logs(ltype, etime);
CREATE INDEX IF NOT EXISTS logs_hostname ON logs(hostname);
CREATE TABLE IF NOT EXISTS seqs(dev TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, json TEXT NOT NULL);
";

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Only takes effect when the database is created (before WAL mode).
    conn.pragma_update(None, "page_size", 8192)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
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
    pub commits: AtomicU64,
    /// Batches that started above the sender's last stored sequence + 1.
    pub seq_gaps: AtomicU64,
}

/// The durable log store.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicU64,
    pub counters: StoreCounters,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Writer {
    conn: Connection,
    last_seq: HashMap<String, u64>,
}

/// Key/value updates written in the same transaction as a batch (IOC state).
pub type KvUpdates = Vec<(String, Option<String>)>;

impl Store {
    /// Opens (or creates) the store at `dir/logs.db`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            msg: e.to_string(),
        })?;
        let path = dir.join("logs.db");
        let conn = open_conn(&path)?;
        conn.execute_batch(SCHEMA)?;
        let mut last_seq = HashMap::new();
        {
            let mut st = conn.prepare("SELECT dev, last FROM seqs")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for r in rows {
                let (d, l) = r?;
                last_seq.insert(d, l as u64);
            }
        }
        let _ = conn.execute_batch("PRAGMA analysis_limit=1000; PRAGMA optimize=0x10002;");
        let mut readers = Vec::new();
        for _ in 0..3 {
            readers.push(Mutex::new(open_conn(&path)?));
        }
        Ok(Store {
            path,
            writer: Mutex::new(Writer { conn, last_seq }),
            readers,
            next_reader: AtomicU64::new(0),
            counters: StoreCounters::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        let n = self.next_reader.fetch_add(1, Ordering::Relaxed) as usize % self.readers.len();
        for i in 0..self.readers.len() {
            if let Ok(g) = self.readers[(n + i) % self.readers.len()].try_lock() {
                return g;
            }
        }
        self.readers[n].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last stored sequence number of a sender.
    pub fn last_seq(&self, dev: &str) -> u64 {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.last_seq.get(dev).copied().unwrap_or(0)
    }

    /// Stores a batch durably. `first_seq` 0 means unsequenced (syslog): every row is stored.
    /// Rows whose sequence is at or below the sender's last stored sequence are dropped.
    /// `hook` sees the rows being stored (inside the transaction, under the write lock) and
    /// returns key/value updates committed with them. Returns the sender's last stored sequence.
    pub fn commit(
        &self,
        dev: &str,
        first_seq: u64,
        mut rows: Vec<Row>,
        rtime: i64,
        hook: impl FnOnce(&[Row]) -> KvUpdates,
    ) -> Result<u64, StoreError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let last = w.last_seq.get(dev).copied().unwrap_or(0);
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
        if rows.is_empty() {
            return Ok(last);
        }
        let new_last = if first_seq > 0 {
            rows.last().map(|r| r.seq).unwrap_or(last)
        } else {
            last
        };
        let updates = hook(&rows);
        let tx = w.conn.transaction()?;
        {
            // Multi-row INSERTs (fewer VDBE round trips per row), then the remainder row by row.
            let mut chunks = rows.chunks_exact(MULTI_ROWS);
            {
                let mut st = tx.prepare_cached(&insert_sql(MULTI_ROWS))?;
                for chunk in &mut chunks {
                    let mut i = 1;
                    for r in chunk {
                        bind_row(&mut st, &mut i, dev, rtime, r)?;
                    }
                    st.raw_execute()?;
                }
            }
            let mut st = tx.prepare_cached(&insert_sql(1))?;
            for r in chunks.remainder() {
                let mut i = 1;
                bind_row(&mut st, &mut i, dev, rtime, r)?;
                st.raw_execute()?;
            }
            drop(st);
            if first_seq > 0 {
                tx.prepare_cached("INSERT INTO seqs(dev,last) VALUES(?1,?2) ON CONFLICT(dev) DO UPDATE SET last=excluded.last")?
                    .execute(params![dev, new_last as i64])?;
            }
            for (k, v) in &updates {
                match v {
                    Some(json) => {
                        tx.prepare_cached("INSERT INTO kv(key,json) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET json=excluded.json")?
                            .execute(params![k, json])?;
                    }
                    None => {
                        tx.prepare_cached("DELETE FROM kv WHERE key=?1")?
                            .execute(params![k])?;
                    }
                }
            }
        }
        tx.commit()?;
        if first_seq > 0 {
            w.last_seq.insert(dev.to_string(), new_last);
        }
        self.counters
            .inserted
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        Ok(if first_seq > 0 { new_last } else { last })
    }

    /// Writes key/value entries durably in one transaction.
    pub fn kv_put(&self, updates: &[(String, Option<String>)]) -> Result<(), StoreError> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = w.conn.transaction()?;
        for (k, v) in updates {
            match v {
                Some(json) => {
                    tx.execute(
                        "INSERT INTO kv(key,json) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET json=excluded.json",
                        params![k, json],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM kv WHERE key=?1", params![k])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
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

    /// One page of a search, plus (when `with_total`) the total number of matches.
    pub fn search(
        &self,
        spec: &SearchSpec,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Found>, StoreError> {
        let (w, mut params) = spec.where_clause()?;
        let order = if spec.desc { "DESC" } else { "ASC" };
        let plus = if spec.selective() { "+" } else { "" };
        params.push(Value::Integer(limit as i64));
        params.push(Value::Integer(offset as i64));
        let n = params.len();
        let sql = format!(
            "SELECT id, dev, seq, ltype, raw FROM logs WHERE {w} ORDER BY {plus}id {order} LIMIT ?{} OFFSET ?{}",
            n - 1,
            n
        );
        let conn = self.reader();
        let mut st = conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(params.iter()), |r| {
            Ok(Found {
                id: r.get(0)?,
                dev: r.get(1)?,
                seq: r.get(2)?,
                ltype: r.get(3)?,
                raw: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Number of logs matching a search.
    pub fn count(&self, spec: &SearchSpec) -> Result<u64, StoreError> {
        let (w, params) = spec.where_clause()?;
        let conn = self.reader();
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM logs WHERE {w}"),
            rusqlite::params_from_iter(params.iter()),
            |r| r.get(0),
        )?;
        Ok(n as u64)
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
        let mut after = 0i64;
        let mut n = 0u64;
        let list: Vec<String> = ltypes.iter().map(|c| c.to_string()).collect();
        loop {
            let page: Vec<(Found, i64)> = {
                let conn = self.reader();
                let mut st = conn.prepare(&format!(
                    "SELECT id, dev, seq, ltype, raw, rtime FROM logs WHERE id > ?1 AND ltype IN ({}) AND etime BETWEEN ?2 AND ?3 ORDER BY id LIMIT 2000",
                    list.join(",")
                ))?;
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
                return Ok(n);
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

    /// Rows per sender: (rows, distinct sequence numbers, min seq, max seq).
    pub fn seq_stats(&self, dev: &str) -> Result<(u64, u64, u64, u64), StoreError> {
        let conn = self.reader();
        let r = conn.query_row(
            "SELECT count(*), count(DISTINCT seq), coalesce(min(seq),0), coalesce(max(seq),0) FROM logs WHERE dev=?1",
            params![dev],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64)),
        )?;
        Ok(r)
    }

    /// Total stored logs (approximate for speed: the largest rowid minus deletions is not
    /// tracked, so this counts).
    pub fn total(&self) -> Result<u64, StoreError> {
        let conn = self.reader();
        let n: i64 = conn.query_row("SELECT count(*) FROM logs", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// The newest stored log of a source IP from a FortiGate (notification routing).
    pub fn last_fortigate_for(&self, srcip: &str) -> Result<Option<String>, StoreError> {
        let Ok(ip) = srcip.parse::<IpAddr>() else {
            return Ok(None);
        };
        let conn = self.reader();
        Ok(conn
            .query_row(
                "SELECT dev FROM logs WHERE srcip=?1 AND ltype NOT IN (5,6) ORDER BY id DESC LIMIT 1",
                params![ip_value(ip)],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Retention: deletes logs that arrived more than `max_age_s` ago (lab time) and, while the database is
    /// larger than `max_bytes`, the oldest logs in chunks. Returns the number deleted.
    pub fn retain(
        &self,
        now_s: i64,
        max_age_s: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        if let Some(age) = max_age_s {
            // By arrival (lab) time, not event time: a lab replaying old logs keeps them.
            // Rows arrive in id order, so everything below the first young row is old.
            let cut: Option<i64> = {
                let conn = self.reader();
                conn.query_row(
                    "SELECT id FROM logs WHERE rtime >= ?1 ORDER BY id LIMIT 1",
                    params![now_s - age],
                    |r| r.get(0),
                )
                .optional()?
            };
            let cut = cut.unwrap_or(i64::MAX);
            loop {
                let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                let n = w.conn.execute(
                    "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE id < ?1 ORDER BY id LIMIT 5000)",
                    params![cut],
                )?;
                deleted += n as u64;
                if n < 5000 {
                    break;
                }
            }
        }
        if let Some(max) = max_bytes {
            for _ in 0..1000 {
                let size = self.size_bytes()?;
                if size <= max {
                    break;
                }
                let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                let n = w.conn.execute(
                    "DELETE FROM logs WHERE id IN (SELECT id FROM logs ORDER BY id LIMIT 5000)",
                    [],
                )?;
                deleted += n as u64;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Bytes in use by the database (pages minus free pages).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let conn = self.reader();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free) * size) as u64)
    }

    /// Refreshes the query planner's statistics.
    pub fn optimize(&self) {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.conn.execute_batch("PRAGMA analysis_limit=1000; ANALYZE;");
        drop(w);
        for r in &self.readers {
            if let Ok(c) = r.lock() {
                let _ = c.execute_batch("ANALYZE sqlite_schema;");
            }
        }
    }
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
}
