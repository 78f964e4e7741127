//! FortiOS log lines into rows: the `key=value` pair scanner (borrowing from the line), the
//! typed columns of a [`Row`], the log-type codes of the FAZ log view, and `field_of` for the
//! fields a row has no column for. Pure: no SQL, no I/O.

use std::borrow::Cow;
use std::net::IpAddr;

use fortilab_core::logfmt::{body_start, unquote_at};
#[cfg(doc)]
use fortilab_core::logfmt::{LogRecord, LogValue};

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
    /// Set by [`Store::commit`](super::Store::commit): the sequence number of the line (0 for syslog).
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

pub(super) fn parse_tz(s: &str) -> Option<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::line;

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
