//! FortiOS log records: ordered `key=value` fields, rendered and parsed by the product's rules.
//!
//! Strings are double-quoted (`type="utm"`), numbers and IP addresses bare (`srcport=61930
//! srcip=10.1.100.11`), `date`/`time` bare, `logid` a quoted 10-digit string. Over syslog the
//! same line follows a `<PRI>` prefix. These lines are product data, never tracing output.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::IpAddr;

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum LogValue {
    /// Quoted on output.
    Str(String),
    /// An integer, bare on output.
    Int(i64),
    /// An IP address, bare on output.
    Ip(IpAddr),
    /// Text written bare as is (`date`, `time`, and values parsed without quotes).
    Bare(String),
}

impl LogValue {
    /// The value as text, without quotes.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            LogValue::Str(s) | LogValue::Bare(s) => std::borrow::Cow::Borrowed(s),
            LogValue::Int(n) => std::borrow::Cow::Owned(n.to_string()),
            LogValue::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            LogValue::Int(n) => Some(*n),
            LogValue::Str(s) | LogValue::Bare(s) => s.parse().ok(),
            LogValue::Ip(_) => None,
        }
    }

    pub fn is_quoted(&self) -> bool {
        matches!(self, LogValue::Str(_))
    }
}

/// A field name. Producers name fields with literals, which are borrowed (no allocation per
/// field); names read from a parsed line are owned.
pub type Key = Cow<'static, str>;

/// A log record: fields in emission order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    fields: Vec<(Key, LogValue)>,
}

/// Errors parsing a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogParseError {
    #[error("column {0}: expected key=value")]
    ExpectedPair(usize),
    #[error("column {0}: unterminated quoted value")]
    Unterminated(usize),
    #[error("column {0}: empty key")]
    EmptyKey(usize),
    #[error("empty log line")]
    Empty,
}

impl LogRecord {
    pub fn new() -> Self {
        Self {
            fields: Vec::with_capacity(40),
        }
    }

    pub fn push(&mut self, key: impl Into<Key>, value: LogValue) -> &mut Self {
        self.fields.push((key.into(), value));
        self
    }

    pub fn str(&mut self, key: impl Into<Key>, value: impl Into<String>) -> &mut Self {
        self.push(key, LogValue::Str(value.into()))
    }

    pub fn int(&mut self, key: impl Into<Key>, value: i64) -> &mut Self {
        self.push(key, LogValue::Int(value))
    }

    pub fn ip(&mut self, key: impl Into<Key>, value: IpAddr) -> &mut Self {
        self.push(key, LogValue::Ip(value))
    }

    pub fn bare(&mut self, key: impl Into<Key>, value: impl Into<String>) -> &mut Self {
        self.push(key, LogValue::Bare(value.into()))
    }

    /// Replaces the value of `key`, or appends it.
    pub fn set(&mut self, key: impl Into<Key>, value: LogValue) {
        let key = key.into();
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.fields.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&LogValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key` as text, without quotes.
    pub fn text(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get(key).map(|v| v.as_text())
    }

    pub fn fields(&self) -> &[(Key, LogValue)] {
        &self.fields
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_ref())
    }

    /// Renders the record as one FortiOS log line.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * self.fields.len().max(1));
        self.render_into(&mut out);
        out
    }

    pub fn render_into(&self, out: &mut String) {
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            match v {
                LogValue::Str(s) => {
                    out.push('"');
                    if s.bytes()
                        .any(|b| matches!(b, b'"' | b'\\') || b < 0x20 || b == 0x7f)
                    {
                        for c in s.chars() {
                            match c {
                                '"' => out.push_str("\\\""),
                                '\\' => out.push_str("\\\\"),
                                '\n' => out.push_str("\\n"),
                                '\r' => out.push_str("\\r"),
                                // Other control characters (ESC, TAB, NUL, DEL) as `\xHH`, so
                                // no value can carry terminal escapes or break the line.
                                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                                    let _ = write!(out, "\\x{:02x}", c as u32);
                                }
                                c => out.push(c),
                            }
                        }
                    } else {
                        // The common case: nothing to escape, one copy.
                        out.push_str(s);
                    }
                    out.push('"');
                }
                LogValue::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                LogValue::Ip(ip) => {
                    let _ = write!(out, "{ip}");
                }
                LogValue::Bare(s) => out.push_str(s),
            }
        }
    }

    /// Renders as a JSON object of strings and numbers (the FortiOS REST log API's shape).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::with_capacity(self.fields.len());
        for (k, v) in &self.fields {
            let jv = match v {
                LogValue::Int(n) => serde_json::Value::from(*n),
                LogValue::Bare(s) => match s.parse::<i64>() {
                    Ok(n) if !k.eq_ignore_ascii_case("date") && !k.eq_ignore_ascii_case("time") => {
                        serde_json::Value::from(n)
                    }
                    _ => serde_json::Value::from(s.clone()),
                },
                other => serde_json::Value::from(other.as_text().into_owned()),
            };
            m.insert(k.to_string(), jv);
        }
        m
    }

    /// Parses one FortiOS log line (an optional `<PRI>` prefix is skipped).
    pub fn parse(line: &str) -> Result<Self, LogParseError> {
        let bytes = line.as_bytes();
        let mut i = body_start(line);
        let mut rec = LogRecord::new();
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
            if i >= bytes.len() || bytes[i] != b'=' {
                return Err(LogParseError::ExpectedPair(key_start + 1));
            }
            if i == key_start {
                return Err(LogParseError::EmptyKey(key_start + 1));
            }
            let key = &line[key_start..i];
            i += 1;
            if i < bytes.len() && bytes[i] == b'"' {
                let Some((val, next)) = unquote_at(line, i) else {
                    return Err(LogParseError::Unterminated(i + 1));
                };
                i = next;
                rec.fields
                    .push((Key::Owned(key.to_string()), LogValue::Str(val.into_owned())));
            } else {
                let start = i;
                while i < bytes.len() && bytes[i] != b' ' && bytes[i] != b'\n' && bytes[i] != b'\r'
                {
                    i += 1;
                }
                let raw = &line[start..i];
                let value = if let Ok(n) = raw.parse::<i64>() {
                    if raw.len() > 1 && raw.starts_with('0') {
                        LogValue::Bare(raw.to_string())
                    } else {
                        LogValue::Int(n)
                    }
                } else if let Ok(ip) = raw.parse::<IpAddr>() {
                    LogValue::Ip(ip)
                } else {
                    LogValue::Bare(raw.to_string())
                };
                rec.fields.push((Key::Owned(key.to_string()), value));
            }
        }
        if rec.fields.is_empty() {
            return Err(LogParseError::Empty);
        }
        Ok(rec)
    }
}

/// FortiOS header order by version: 6.2 and earlier put `logid` right after `devid`; 6.4 and
/// 7.x put `eventtime tz` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStyle {
    V62,
    V64Plus,
}

impl HeaderStyle {
    /// The style of a FortiOS version string (`6.4.4`, `v7.0.12`).
    pub fn for_version(version: &str) -> Self {
        let v = version.trim_start_matches(['v', 'V']);
        let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        if major > 6 || (major == 6 && minor >= 4) {
            HeaderStyle::V64Plus
        } else {
            HeaderStyle::V62
        }
    }
}

/// The common header of a FortiOS log record.
#[derive(Debug, Clone)]
pub struct LogHeader<'a> {
    pub devname: &'a str,
    pub devid: &'a str,
    pub vd: &'a str,
    pub eventtime_ns: i64,
    pub tz: &'a str,
    pub logid: &'a str,
    pub log_type: &'a str,
    pub subtype: &'a str,
    pub eventtype: Option<&'a str>,
    pub level: &'a str,
}

impl LogHeader<'_> {
    /// Starts a record with this header in the version's order; the caller appends the body.
    pub fn start(&self, style: HeaderStyle, clock: &crate::clock::LabClock) -> LogRecord {
        let (date, time) = clock.date_time(self.eventtime_ns);
        let mut r = LogRecord::new();
        r.bare("date", date).bare("time", time);
        r.str("devname", self.devname).str("devid", self.devid);
        match style {
            HeaderStyle::V64Plus => {
                r.int("eventtime", self.eventtime_ns).str("tz", self.tz);
                r.str("logid", self.logid)
                    .str("type", self.log_type)
                    .str("subtype", self.subtype);
                if let Some(e) = self.eventtype {
                    r.str("eventtype", e);
                }
                r.str("level", self.level).str("vd", self.vd);
            }
            HeaderStyle::V62 => {
                r.str("logid", self.logid)
                    .str("type", self.log_type)
                    .str("subtype", self.subtype);
                if let Some(e) = self.eventtype {
                    r.str("eventtype", e);
                }
                r.str("level", self.level).str("vd", self.vd);
                r.int("eventtime", self.eventtime_ns).str("tz", self.tz);
            }
        }
        r
    }
}

/// Where the `key=value` body of a log line starts: after a syslog priority prefix (`<189>`)
/// when there is one, else 0.
#[inline]
pub fn body_start(line: &str) -> usize {
    let bytes = line.as_bytes();
    if bytes.first() == Some(&b'<') {
        if let Some(end) = bytes.iter().take(6).position(|&b| b == b'>') {
            if bytes[1..end].iter().all(|b| b.is_ascii_digit()) {
                return end + 1;
            }
        }
    }
    0
}

/// Reads the quoted value of a log line whose opening `"` is at byte `open` of `line`, undoing
/// the escapes (`\n`, `\r`, `\xHH` for other control characters, `\` + any other character):
/// the value (borrowed from `line` when it has no escape) and the index just past the closing
/// `"`; `None` when the quote is not closed.
#[inline]
pub fn unquote_at(line: &str, open: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = line.as_bytes();
    let mut i = open + 1;
    let mut owned: Option<String> = None;
    let mut from = i;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => {
                let o = owned.get_or_insert_with(String::new);
                o.push_str(&line[from..i]);
                let c = line[i + 1..].chars().next().unwrap_or('\\');
                let hex = |b: u8| (b as char).to_digit(16);
                match (c, bytes.get(i + 2).copied(), bytes.get(i + 3).copied()) {
                    ('x', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                        let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                        o.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                        i += 4;
                    }
                    _ => {
                        o.push(match c {
                            'n' => '\n',
                            'r' => '\r',
                            other => other,
                        });
                        i += 1 + c.len_utf8();
                    }
                }
                from = i;
            }
            b'"' => {
                let value = match owned {
                    Some(mut o) => {
                        o.push_str(&line[from..i]);
                        Cow::Owned(o)
                    }
                    None => Cow::Borrowed(&line[open + 1..i]),
                };
                return Some((value, i + 1));
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_starts_after_a_syslog_priority() {
        assert_eq!(body_start("<189>date=2024-01-01"), 5);
        assert_eq!(body_start("date=2024-01-01"), 0);
        assert_eq!(body_start("<x>date=1"), 0);
        assert_eq!(body_start("<1234567>a=1"), 0, "not a priority: too long");
    }

    #[test]
    fn unquote_at_borrows_without_escapes() {
        let line = r#"a="x y" b="p\"q\nr" c="open"#;
        let (v, next) = unquote_at(line, 2).unwrap();
        assert!(matches!(v, Cow::Borrowed("x y")));
        assert_eq!(&line[next..next + 2], " b");
        let (v, next) = unquote_at(line, 10).unwrap();
        assert!(matches!(&v, Cow::Owned(s) if s == "p\"q\nr"));
        assert_eq!(&line[next..next + 2], " c");
        assert_eq!(unquote_at(line, 22), None);
    }
    use proptest::prelude::*;

    const SAMPLE: &str = r#"date=2019-05-13 time=16:29:45 logid="0316013056" type="utm" subtype="webfilter" eventtype="ftgd_blk" level="warning" vd="vdom1" eventtime=1557790184975119738 policyid=1 sessionid=381780 srcip=10.1.100.11 srcport=44258 srcintf="port12" hostname="morrishittu.ddns.net" profile="test-webfilter" action="blocked" url="/" msg="URL belongs to a denied category in policy" cat=26 catdesc="Malicious Websites" crscore=30 craction=4194304 crlevel="high""#;

    #[test]
    fn parses_and_renders_the_reference_sample_byte_for_byte() {
        let r = LogRecord::parse(SAMPLE).unwrap();
        assert_eq!(r.text("logid").unwrap(), "0316013056");
        assert!(r.get("logid").unwrap().is_quoted());
        assert_eq!(r.get("cat"), Some(&LogValue::Int(26)));
        assert_eq!(
            r.get("srcip"),
            Some(&LogValue::Ip("10.1.100.11".parse().unwrap()))
        );
        assert_eq!(r.render(), SAMPLE);
    }

    #[test]
    fn escapes_quotes_and_skips_priority() {
        let mut r = LogRecord::new();
        r.str("msg", "say \"hi\"").int("n", 5);
        let line = r.render();
        assert_eq!(line, r#"msg="say \"hi\"" n=5"#);
        let back = LogRecord::parse(&format!("<188>{line}")).unwrap();
        assert_eq!(back, r);
        assert!(matches!(
            LogRecord::parse("a=\"x"),
            Err(LogParseError::Unterminated(3))
        ));
        assert!(matches!(
            LogRecord::parse("novalue"),
            Err(LogParseError::ExpectedPair(1))
        ));
    }

    #[test]
    fn control_characters_and_markup_are_escaped_and_read_back() {
        let hostile = "PC-52\x1b[31m<script>alert(1)</script>\t\u{0}\u{7f}\"x\" \\ end";
        let mut r = LogRecord::new();
        r.str("hostname", hostile).int("n", 1);
        let line = r.render();
        assert!(
            !line.bytes().any(|b| b < 0x20 || b == 0x7f),
            "no raw control character: {line:?}"
        );
        assert!(
            line.contains(r#"\x1b[31m"#) && line.contains(r#"\x09"#),
            "{line}"
        );
        assert!(line.ends_with(" n=1"), "the value stays one field: {line}");
        let back = LogRecord::parse(&line).unwrap();
        assert_eq!(back.text("hostname").unwrap(), hostile);
    }

    #[test]
    fn header_order_by_version() {
        assert_eq!(HeaderStyle::for_version("6.4.4"), HeaderStyle::V64Plus);
        assert_eq!(HeaderStyle::for_version("v7.2.5"), HeaderStyle::V64Plus);
        assert_eq!(HeaderStyle::for_version("6.2.9"), HeaderStyle::V62);
        let clock = crate::clock::LabClock::new(0, 0, 1.0, 0);
        let h = LogHeader {
            devname: "FGT-LAB",
            devid: "FGVM01TM00000000",
            vd: "root",
            eventtime_ns: 1_614_881_482_000_000_000,
            tz: "+0000",
            logid: "0100046600",
            log_type: "event",
            subtype: "system",
            eventtype: None,
            level: "notice",
        };
        let keys: Vec<String> = h
            .start(HeaderStyle::V64Plus, &clock)
            .keys()
            .map(String::from)
            .collect();
        assert_eq!(
            keys[..7],
            [
                "date",
                "time",
                "devname",
                "devid",
                "eventtime",
                "tz",
                "logid"
            ]
        );
        let keys: Vec<String> = h
            .start(HeaderStyle::V62, &clock)
            .keys()
            .map(String::from)
            .collect();
        assert_eq!(keys[4], "logid");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = LogRecord::parse(&s);
        }

        #[test]
        fn render_parse_round_trip(vals in proptest::collection::vec(("[a-z_]{1,10}", "\\PC{0,20}|[\\x00-\\x1f\\x7f\\\\\"x0-9a-f]{0,12}"), 1..10)) {
            let mut r = LogRecord::new();
            for (k, v) in &vals { r.str(k.clone(), v.clone()); }
            let back = LogRecord::parse(&r.render()).unwrap();
            prop_assert_eq!(back, r);
        }
    }
}
