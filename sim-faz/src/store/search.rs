//! Reading the store: searches and counts fanned out over the segments (newest first, one
//! read snapshot), the rescan scan, per-sender sequence statistics, totals and the routing
//! look-up of a source IP's FortiGate.

use std::net::IpAddr;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

use super::parse::{parse_row, Row};
use super::schema::Seg;
use super::{Store, StoreError};
use crate::filter::{self, ip_value, Expr};

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

fn is_no_table(e: &rusqlite::Error) -> bool {
    e.to_string().contains("no such table")
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
