//! The FortiAnalyzer log-view filter language, compiled to an SQL `WHERE` clause over the log
//! store's typed columns.
//!
//! Syntax (FAZ admin guide and real requests, reference faz-ems.md §2.3):
//! `field==value`, `field=value`, `field!=value`, `field>n`, `field<n`, `>=`, `<=`,
//! `field~text` (contains, lab extension), ranges `a-b` (IPs and numbers), CIDR `a.b.c.d/n`,
//! wildcards `*`, quoted values `"a b"`, `and`/`or`/`not` (and `&&`, `||`, `!`), parentheses, and a
//! space between conditions means AND. Text comparisons ignore case unless the search asks for
//! `case-sensitive`.

use std::net::IpAddr;

use rusqlite::types::Value;

/// A filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cond {
        field: String,
        op: Op,
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    NotContains,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter column {col}: {msg}")]
pub struct FilterError {
    pub col: usize,
    pub msg: String,
}

fn err(col: usize, msg: impl Into<String>) -> FilterError {
    FilterError {
        col: col + 1,
        msg: msg.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Cond(String, Op, String),
}

/// Longest input accepted (a real FAZ caps filters too).
pub const MAX_FILTER: usize = 4096;

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    if s.len() > MAX_FILTER {
        return Err(err(MAX_FILTER, "filter too long"));
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        match c {
            b'(' => {
                out.push((i, Tok::LParen));
                i += 1;
                continue;
            }
            b')' => {
                out.push((i, Tok::RParen));
                i += 1;
                continue;
            }
            b'&' if b.get(i + 1) == Some(&b'&') => {
                out.push((i, Tok::And));
                i += 2;
                continue;
            }
            b'|' if b.get(i + 1) == Some(&b'|') => {
                out.push((i, Tok::Or));
                i += 2;
                continue;
            }
            b'!' if b.get(i + 1) != Some(&b'=') && b.get(i + 1) != Some(&b'~') => {
                out.push((i, Tok::Not));
                i += 1;
                continue;
            }
            _ => {}
        }
        // A word: keyword or `field op value`.
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'-' | b'.')) {
            i += 1;
        }
        let word = &s[start..i];
        if word.is_empty() {
            return Err(err(
                start,
                format!("unexpected {:?}", s[start..].chars().next().unwrap_or(' ')),
            ));
        }
        // Optional spaces before an operator.
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let op = match (b.get(j), b.get(j + 1)) {
            (Some(b'='), Some(b'=')) => Some((Op::Eq, 2)),
            (Some(b'!'), Some(b'=')) => Some((Op::Ne, 2)),
            (Some(b'!'), Some(b'~')) => Some((Op::NotContains, 2)),
            (Some(b'>'), Some(b'=')) => Some((Op::Ge, 2)),
            (Some(b'<'), Some(b'=')) => Some((Op::Le, 2)),
            (Some(b'='), _) => Some((Op::Eq, 1)),
            (Some(b'>'), _) => Some((Op::Gt, 1)),
            (Some(b'<'), _) => Some((Op::Lt, 1)),
            (Some(b'~'), _) => Some((Op::Contains, 1)),
            _ => None,
        };
        let Some((op, n)) = op else {
            match word.to_ascii_lowercase().as_str() {
                "and" => out.push((start, Tok::And)),
                "or" => out.push((start, Tok::Or)),
                "not" => out.push((start, Tok::Not)),
                _ => return Err(err(start, format!("expected an operator after {word:?}"))),
            }
            continue;
        };
        i = j + n;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            let vstart = i;
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        let ch = s[i + 1..].chars().next().unwrap_or('\\');
                        v.push(ch);
                        i += 1 + ch.len_utf8();
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    _ => {
                        let ch = s[i..].chars().next().unwrap_or(' ');
                        v.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                return Err(err(vstart, "unterminated quoted value"));
            }
            v
        } else {
            let vstart = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b')' {
                i += 1;
            }
            if vstart == i {
                return Err(err(vstart, format!("missing value for {word:?}")));
            }
            s[vstart..i].to_string()
        };
        out.push((start, Tok::Cond(word.to_ascii_lowercase(), op, value)));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map(|(c, _)| *c).unwrap_or(self.len)
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut v = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut v = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    v.push(self.unary()?);
                }
                Some(Tok::Cond(..)) | Some(Tok::Not) | Some(Tok::LParen) => v.push(self.unary()?),
                _ => break,
            }
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap()
        } else {
            Expr::And(v)
        })
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(err(self.col(), "filter nested too deeply"));
        }
        let col = self.col();
        let r = match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(err(self.col(), "expected ')'"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Cond(f, op, v)) => {
                self.pos += 1;
                Ok(Expr::Cond {
                    field: f,
                    op,
                    value: v,
                })
            }
            Some(t) => Err(err(col, format!("unexpected {t:?}"))),
            None => Err(err(col, "unexpected end of filter")),
        };
        self.depth -= 1;
        r
    }
}

/// Parses a filter; an empty filter is `None` (everything matches).
pub fn parse(s: &str) -> Result<Option<Expr>, FilterError> {
    let toks = lex(s)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        len: s.len(),
        depth: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(err(p.col(), "unexpected trailing input"));
    }
    Ok(Some(e))
}

/// How a field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColKind {
    Text,
    Int,
    Ip,
}

/// The log store's typed columns: filter field → (column, kind).
pub fn column(field: &str) -> Option<(&'static str, ColKind)> {
    Some(match field {
        "type" => ("type", ColKind::Text),
        "subtype" => ("subtype", ColKind::Text),
        "logid" => ("logid", ColKind::Text),
        "level" => ("level", ColKind::Text),
        "srcip" => ("srcip", ColKind::Ip),
        "dstip" => ("dstip", ColKind::Ip),
        "srcport" => ("srcport", ColKind::Int),
        "dstport" => ("dstport", ColKind::Int),
        "hostname" => ("hostname", ColKind::Text),
        "url" => ("url", ColKind::Text),
        "action" => ("action", ColKind::Text),
        "policyid" => ("policyid", ColKind::Int),
        "devid" => ("devid", ColKind::Text),
        "devname" => ("devname", ColKind::Text),
        "vd" | "vdom" => ("vd", ColKind::Text),
        "catdesc" => ("catdesc", ColKind::Text),
        "cat" => ("cat", ColKind::Int),
        "user" => ("user", ColKind::Text),
        "seq" => ("seq", ColKind::Int),
        "itime" => ("etime", ColKind::Int),
        _ => return None,
    })
}

/// The stored form of an IP: IPv4 as an integer (so ranges and CIDR use the index), IPv6 as text.
pub fn ip_value(ip: IpAddr) -> Value {
    match ip {
        IpAddr::V4(v4) => Value::Integer(u32::from(v4) as i64),
        IpAddr::V6(v6) => Value::Text(v6.to_string()),
    }
}

/// Parses an IPv4 range form: `a-b`, CIDR, or a trailing-wildcard `10.1.*` / `10.1.2.*`.
fn ip_range(v: &str) -> Option<(i64, i64)> {
    if let Some((a, b)) = v.split_once('-') {
        let a: std::net::Ipv4Addr = a.trim().parse().ok()?;
        let b: std::net::Ipv4Addr = b.trim().parse().ok()?;
        return Some((u32::from(a) as i64, u32::from(b) as i64));
    }
    if let Some((a, bits)) = v.split_once('/') {
        let a: std::net::Ipv4Addr = a.parse().ok()?;
        let bits: u32 = bits.parse().ok()?;
        if bits > 32 {
            return None;
        }
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        let lo = u32::from(a) & mask;
        return Some((lo as i64, (lo | !mask) as i64));
    }
    if v.contains('*') {
        let parts: Vec<&str> = v.split('.').collect();
        if parts.is_empty() || parts.len() > 4 {
            return None;
        }
        let mut lo: u32 = 0;
        let mut hi: u32 = 0;
        let mut wild = false;
        for i in 0..4 {
            let p = parts.get(i).copied().unwrap_or("*");
            let (l, h) = if p == "*" || wild {
                wild = true;
                (0u32, 255u32)
            } else {
                let n: u8 = p.parse().ok()?;
                (n as u32, n as u32)
            };
            lo = (lo << 8) | l;
            hi = (hi << 8) | h;
        }
        return wild.then_some((lo as i64, hi as i64));
    }
    None
}

/// [`ip_range`] for other modules (JSON row filters).
pub fn ip_range_pub(v: &str) -> Option<(i64, i64)> {
    ip_range(v)
}

/// SQL built from a filter.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub params: Vec<Value>,
}

fn like_pattern(v: &str, contains: bool) -> String {
    let mut p = String::with_capacity(v.len() + 2);
    if contains {
        p.push('%');
    }
    for c in v.chars() {
        match c {
            '%' | '_' | '\\' => {
                p.push('\\');
                p.push(c);
            }
            '*' => p.push('%'),
            c => p.push(c),
        }
    }
    if contains {
        p.push('%');
    }
    p
}

fn glob_pattern(v: &str, contains: bool) -> String {
    let mut p = String::new();
    if contains {
        p.push('*');
    }
    for c in v.chars() {
        match c {
            '?' => p.push_str("[?]"),
            '[' => p.push_str("[[]"),
            c => p.push(c),
        }
    }
    if contains {
        p.push('*');
    }
    p
}

impl Sql {
    fn push(&mut self, v: Value) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    fn emit(&mut self, e: &Expr, case: bool) -> Result<(), FilterError> {
        match e {
            Expr::And(v) | Expr::Or(v) => {
                let sep = if matches!(e, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.text.push('(');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(sep);
                    }
                    self.emit(x, case)?;
                }
                self.text.push(')');
            }
            Expr::Not(x) => {
                self.text.push_str("NOT (");
                self.emit(x, case)?;
                self.text.push(')');
            }
            Expr::Cond { field, op, value } => self.cond(field, *op, value, case)?,
        }
        Ok(())
    }

    fn cond(&mut self, field: &str, op: Op, value: &str, case: bool) -> Result<(), FilterError> {
        let (col, kind) = match column(field) {
            Some((c, k)) => (c.to_string(), k),
            None => {
                if !field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
                {
                    return Err(err(0, format!("bad field name {field:?}")));
                }
                let p = self.push(Value::Text(field.to_string()));
                (format!("lf(raw, {p})"), ColKind::Text)
            }
        };
        let cmp = |op: Op| match op {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            _ => "=",
        };
        let negate = matches!(op, Op::Ne | Op::NotContains);
        match kind {
            ColKind::Ip if !matches!(op, Op::Contains | Op::NotContains) => {
                if let Ok(ip) = value.parse::<IpAddr>() {
                    let p = self.push(ip_value(ip));
                    self.text.push_str(&format!("{col} {} {p}", cmp(op)));
                    return Ok(());
                }
                if let Some((lo, hi)) = ip_range(value) {
                    if !matches!(op, Op::Eq | Op::Ne) {
                        return Err(err(0, format!("{field}: a range needs = or !=")));
                    }
                    let a = self.push(Value::Integer(lo));
                    let b = self.push(Value::Integer(hi));
                    let not = if negate { "NOT " } else { "" };
                    self.text
                        .push_str(&format!("{not}({col} BETWEEN {a} AND {b})"));
                    return Ok(());
                }
                return Err(err(
                    0,
                    format!("{field}: not an IP, range, CIDR or wildcard: {value:?}"),
                ));
            }
            ColKind::Int if !matches!(op, Op::Contains | Op::NotContains) => {
                if let Ok(n) = value.parse::<i64>() {
                    let p = self.push(Value::Integer(n));
                    self.text.push_str(&format!("{col} {} {p}", cmp(op)));
                    return Ok(());
                }
                if let Some((a, b)) = value.split_once('-') {
                    if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                        let pa = self.push(Value::Integer(a));
                        let pb = self.push(Value::Integer(b));
                        let not = if negate { "NOT " } else { "" };
                        self.text
                            .push_str(&format!("{not}({col} BETWEEN {pa} AND {pb})"));
                        return Ok(());
                    }
                }
                return Err(err(0, format!("{field}: not a number or range: {value:?}")));
            }
            _ => {}
        }
        // Text (and contains on any column).
        let contains = matches!(op, Op::Contains | Op::NotContains);
        let not = if negate { "NOT " } else { "" };
        match op {
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                // Numeric comparison on a text-stored field.
                let n: f64 = value
                    .parse()
                    .map_err(|_| err(0, format!("{field}: {value:?} is not a number")))?;
                let p = self.push(Value::Real(n));
                self.text
                    .push_str(&format!("CAST({col} AS REAL) {} {p}", cmp(op)));
            }
            _ if contains || value.contains('*') => {
                if case {
                    let p = self.push(Value::Text(glob_pattern(value, contains)));
                    self.text.push_str(&format!("{not}({col} GLOB {p})"));
                } else {
                    let p = self.push(Value::Text(like_pattern(value, contains)));
                    self.text
                        .push_str(&format!("{not}({col} LIKE {p} ESCAPE '\\')"));
                }
            }
            _ => {
                let p = self.push(Value::Text(value.to_string()));
                let coll = if case {
                    " COLLATE BINARY"
                } else {
                    " COLLATE NOCASE"
                };
                let o = if negate { "IS NOT" } else { "=" };
                if negate {
                    self.text.push_str(&format!("({col}{coll} {o} {p})"));
                } else {
                    self.text.push_str(&format!("{col}{coll} {o} {p}"));
                }
            }
        }
        Ok(())
    }
}

/// Compiles a parsed filter to SQL (`?N` parameters, starting after `offset` existing ones).
pub fn to_sql(e: &Expr, case_sensitive: bool, offset: usize) -> Result<Sql, FilterError> {
    let mut sql = Sql {
        text: String::new(),
        params: Vec::new(),
    };
    sql.params.reserve(offset);
    for _ in 0..offset {
        sql.params.push(Value::Null);
    }
    sql.emit(e, case_sensitive)?;
    sql.params.drain(..offset);
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(f: &str, op: Op, v: &str) -> Expr {
        Expr::Cond {
            field: f.into(),
            op,
            value: v.into(),
        }
    }

    #[test]
    fn parses_the_reference_examples() {
        assert_eq!(
            parse("srcip==10.0.0.1").unwrap(),
            Some(c("srcip", Op::Eq, "10.0.0.1"))
        );
        assert_eq!(
            parse("eventtype=\"botnet\"").unwrap(),
            Some(c("eventtype", Op::Eq, "botnet"))
        );
        assert_eq!(
            parse("srcip=\"10.0.200.253\" dstip=\"140.82.121.5\"").unwrap(),
            Some(Expr::And(vec![
                c("srcip", Op::Eq, "10.0.200.253"),
                c("dstip", Op::Eq, "140.82.121.5")
            ]))
        );
        assert_eq!(
            parse("policyid>1 and policyid<10").unwrap(),
            Some(Expr::And(vec![
                c("policyid", Op::Gt, "1"),
                c("policyid", Op::Lt, "10")
            ]))
        );
        assert_eq!(
            parse("not (action=blocked or action==passthrough) srcip = 1.2.3.4").unwrap(),
            Some(Expr::And(vec![
                Expr::Not(Box::new(Expr::Or(vec![
                    c("action", Op::Eq, "blocked"),
                    c("action", Op::Eq, "passthrough")
                ]))),
                c("srcip", Op::Eq, "1.2.3.4")
            ]))
        );
        assert_eq!(parse("  ").unwrap(), None);
        assert_eq!(
            parse("fct_devid=*").unwrap(),
            Some(c("fct_devid", Op::Eq, "*"))
        );
        assert_eq!(
            parse("!hostname~eicar").unwrap(),
            Some(Expr::Not(Box::new(c("hostname", Op::Contains, "eicar"))))
        );
        assert_eq!(
            parse("user!=\"a \\\"b\\\"\"").unwrap(),
            Some(c("user", Op::Ne, "a \"b\""))
        );
    }

    #[test]
    fn rejects_bad_filters_with_a_column() {
        for bad in [
            "srcip",
            "srcip==",
            "(srcip=1.1.1.1",
            "srcip=1.1.1.1)",
            "and",
            "a=\"x",
            "#=1",
            "a=1 or",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.col >= 1, "{bad}: {e}");
        }
        assert!(parse(&"(".repeat(100)).is_err());
        assert!(parse(&"a=1 ".repeat(2000)).is_err());
    }

    #[test]
    fn ip_ranges() {
        assert_eq!(ip_range("192.168.1.0/24"), Some((3232235776, 3232236031)));
        assert_eq!(
            ip_range("10.1.0.1-10.1.0.254"),
            Some((167837697, 167837950))
        );
        assert_eq!(ip_range("192.168.1.*"), Some((3232235776, 3232236031)));
        assert_eq!(ip_range("10.*"), Some((167772160, 184549375)));
        assert_eq!(ip_range("x.*"), None);
        assert_eq!(ip_range("1.2.3.4/33"), None);
    }

    #[test]
    fn compiles_to_sql_and_selects_rows() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE logs(id INTEGER PRIMARY KEY, srcip, dstip, policyid INTEGER, hostname TEXT COLLATE NOCASE, action TEXT COLLATE NOCASE, raw TEXT);",
        )
        .unwrap();
        crate::store::register_functions(&db).unwrap();
        let rows = [
            (
                "10.115.2.52",
                "89.1.1.1",
                1,
                "www.eicar.org",
                "blocked",
                "a=1 eventtype=\"ftgd_blk\"",
            ),
            (
                "10.115.2.53",
                "89.1.1.2",
                5,
                "WWW.Example.com",
                "passthrough",
                "a=2",
            ),
            (
                "10.115.3.9",
                "195.22.28.198",
                12,
                "x.example",
                "passthrough",
                "a=3 fct_devid=\"FCT1\"",
            ),
        ];
        for (s, d, p, h, a, raw) in rows {
            db.execute(
                "INSERT INTO logs(srcip,dstip,policyid,hostname,action,raw) VALUES(?1,?2,?3,?4,?5,?6)",
                rusqlite::params![ip_value(s.parse().unwrap()), ip_value(d.parse().unwrap()), p, h, a, raw],
            )
            .unwrap();
        }
        let q = |f: &str, case: bool| -> Vec<i64> {
            let e = parse(f).unwrap().unwrap();
            let sql = to_sql(&e, case, 0).unwrap();
            let mut st = db
                .prepare(&format!(
                    "SELECT id FROM logs WHERE {} ORDER BY id",
                    sql.text
                ))
                .unwrap();
            st.query_map(rusqlite::params_from_iter(sql.params.iter()), |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(q("srcip==10.115.2.52", false), vec![1]);
        assert_eq!(q("srcip=10.115.2.0/24", false), vec![1, 2]);
        assert_eq!(q("srcip=10.115.2.53-10.115.3.9", false), vec![2, 3]);
        assert_eq!(q("srcip=10.115.*", false), vec![1, 2, 3]);
        assert_eq!(q("srcip!=10.115.2.0/24", false), vec![3]);
        assert_eq!(q("policyid>1 and policyid<10", false), vec![2]);
        assert_eq!(q("policyid=2-20", false), vec![2, 3]);
        assert_eq!(q("hostname=www.example.com", false), vec![2]);
        assert_eq!(q("hostname=www.example.com", true), Vec::<i64>::new());
        assert_eq!(q("hostname=*.example*", false), vec![2, 3]);
        assert_eq!(q("hostname~EICAR", false), vec![1]);
        assert_eq!(
            q("action=blocked or dstip=195.22.28.198", false),
            vec![1, 3]
        );
        assert_eq!(q("not action=blocked", false), vec![2, 3]);
        assert_eq!(q("eventtype=\"ftgd_blk\"", false), vec![1]);
        assert_eq!(q("fct_devid=*", false), vec![3]);
        assert_eq!(q("a>1", false), vec![2, 3]);
        for bad in ["srcip=foo", "policyid=abc", "srcip>10.0.0.0/8", "a>x"] {
            let e = parse(bad).unwrap().unwrap();
            assert!(to_sql(&e, false, 0).is_err(), "{bad}");
        }
    }
}
