//! The database layout: the tables beside the logs (`seqs`, `kv`), a log segment's two tables
//! and the indexes it gets when sealed, the connection settings (WAL, `synchronous=FULL`,
//! bounded caches and maps) and the `lf(raw, key)` SQL function.

use std::path::Path;

use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

use super::parse::field_of;
use super::StoreError;

/// Columns of one inserted row.
pub(super) const COLS: &str = "id,dev,seq,rtime,ltype,type,subtype,logid,level,srcip,dstip,srcport,dstport,hostname,url,action,policyid,devid,devname,vd,etime,catdesc,cat,user";
pub(super) const NCOLS: usize = 24;

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

/// Tables outside the log segments.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seqs(dev TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, json TEXT NOT NULL);
";

/// A log segment: table `logs_NNNNNN` (typed columns) and `raws_NNNNNN` (the raw lines, by
/// the same id). The segment being filled has no secondary indexes (appends only); a full one
/// is sealed: its indexes are built in one pass each ([`index_sql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seg {
    pub(super) n: u32,
    pub(super) sealed: bool,
}

impl Seg {
    /// Its table of typed columns (`logs_NNNNNN`).
    pub(super) fn logs_table(&self) -> String {
        seg_name(self.n)
    }
    /// Its table of raw lines (`raws_NNNNNN`).
    pub(super) fn raws_table(&self) -> String {
        format!("raws_{:06}", self.n)
    }
}

/// The name of log segment `n`'s table of typed columns.
pub(super) fn seg_name(n: u32) -> String {
    format!("logs_{n:06}")
}

pub(super) fn segment_sql(seg: Seg) -> String {
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
pub(super) fn index_sql(seg: Seg) -> String {
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
pub(super) fn open_conn(
    path: &Path,
    cache_kib: u32,
    mmap_bytes: u64,
) -> Result<Connection, StoreError> {
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
