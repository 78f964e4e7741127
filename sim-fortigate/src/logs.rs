//! FortiOS logs written by the device: a [`LogWriter`] that renders records with the
//! version's header order (`fortilab_core::logfmt`), keeps them in a memory ring (what
//! `GET /api/v2/log/memory/...` reads) and hands every line to its consumers (the log
//! forwarder to FortiAnalyzer and syslog, the automation's event-log trigger), in order, from
//! the writer itself: no consumer task is woken for a line it does not want.
//!
//! The memory ring keeps only each line's text (one shared allocation); a reader gets the
//! record parsed again from it. At tens of thousands of logs a second, keeping the parsed
//! records (~45 fields each) made every write free and allocate cold memory, which showed as
//! latency in the proxied traffic that writes the logs.
//!
//! Keep additions simple: build the body with [`LogWriter::write`] (any type/subtype) or the
//! [`LogWriter::event_system`] shortcut; the writer adds the header.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use fortilab_core::clock::LabClock;
use fortilab_core::logfmt::{HeaderStyle, LogHeader, LogRecord};

/// One written log.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Sequence number in this process, from 1.
    pub seq: u64,
    pub log_type: &'static str,
    pub subtype: &'static str,
    pub record: LogRecord,
    /// The rendered line (as sent to FortiAnalyzer/syslog), shared with the memory ring.
    pub line: Arc<str>,
}

/// What the memory ring keeps of a log.
#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    log_type: &'static str,
    subtype: &'static str,
    line: Arc<str>,
}

impl Stored {
    fn is(&self, log_type: &str, subtype: &str) -> bool {
        self.log_type == log_type && self.subtype == subtype
    }

    /// The log with its record parsed again from the line. The writer rendered the line from
    /// a record, so it parses back to the same fields and values (`to_json`, `text`).
    fn load(&self) -> Arc<LogLine> {
        Arc::new(LogLine {
            seq: self.seq,
            log_type: self.log_type,
            subtype: self.subtype,
            record: reparse(self.seq, &self.line),
            line: self.line.clone(),
        })
    }
}

/// The record of a line this writer rendered. Rendering and parsing are inverse (a property
/// test in `logfmt`), so the error branch means a bug: it is reported, not hidden.
fn reparse(seq: u64, line: &str) -> LogRecord {
    LogRecord::parse(line).unwrap_or_else(|err| {
        tracing::error!(seq, error = %err, "a memory log line does not parse back");
        LogRecord::default()
    })
}

/// Header fields that vary per log.
#[derive(Debug, Clone, Copy)]
pub struct LogKind<'a> {
    /// 10-digit log id (`0100032001`).
    pub logid: &'a str,
    /// `event`, `traffic`, `utm`.
    pub log_type: &'static str,
    /// `system`, `forward`, `webfilter`.
    pub subtype: &'static str,
    pub eventtype: Option<&'a str>,
    /// `information`, `notice`, `warning`, `alert`...
    pub level: &'a str,
}

/// A consumer of every line: called in sequence order, under the writer's lock.
type Sink = Box<dyn Fn(&Arc<LogLine>) + Send + Sync>;

struct Ring {
    seq: u64,
    lines: VecDeque<Stored>,
    sinks: Vec<Sink>,
    /// Lines up to this sequence number came from a lab snapshot ([`LogWriter::import`]): they
    /// were forwarded before the snapshot was taken, so a sink registered later does not get
    /// them again.
    imported_upto: u64,
}

/// A memory log line as a lab snapshot keeps it (see [`LogWriter::export`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedLog {
    pub seq: u64,
    #[serde(rename = "type")]
    pub log_type: String,
    pub subtype: String,
    pub line: String,
}

/// The memory log of a lab snapshot: the ring's lines and the last sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedLogs {
    pub seq: u64,
    pub lines: Vec<SavedLog>,
}

/// Type and subtype names are `&'static str` in the ring; names read back from a snapshot are
/// the writer's own (a handful), interned once each.
fn intern(s: &str) -> &'static str {
    static NAMES: std::sync::OnceLock<Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let mut set = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = set.get(s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(n);
    n
}

/// The device's log writer and memory log.
pub struct LogWriter {
    devname: RwLock<String>,
    devid: String,
    vd: String,
    style: HeaderStyle,
    clock: LabClock,
    capacity: usize,
    ring: Mutex<Ring>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("devid", &self.devid)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// A writer for device `devname`/`devid` running FortiOS `version`, keeping the last
    /// `capacity` logs in memory.
    pub fn new(
        devname: &str,
        devid: &str,
        version: &str,
        clock: LabClock,
        capacity: usize,
    ) -> Self {
        Self {
            devname: RwLock::new(devname.to_string()),
            devid: devid.to_string(),
            vd: "root".into(),
            style: HeaderStyle::for_version(version),
            clock,
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                seq: 0,
                lines: VecDeque::new(),
                sinks: Vec::new(),
                imported_upto: 0,
            }),
        }
    }

    /// Follows a hostname change.
    pub fn set_devname(&self, name: &str) {
        *self.devname.write().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    }

    pub fn clock(&self) -> &LabClock {
        &self.clock
    }

    /// Writes a log: header for `kind`, then `body` appends the message fields.
    pub fn write(&self, kind: LogKind<'_>, body: impl FnOnce(&mut LogRecord)) -> Arc<LogLine> {
        let devname = self
            .devname
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = self.clock.now_ns();
        let tz = self.clock.tz_string();
        let header = LogHeader {
            devname: &devname,
            devid: &self.devid,
            vd: &self.vd,
            eventtime_ns: now,
            tz: &tz,
            logid: kind.logid,
            log_type: kind.log_type,
            subtype: kind.subtype,
            eventtype: kind.eventtype,
            level: kind.level,
        };
        let mut rec = header.start(self.style, &self.clock);
        body(&mut rec);
        let line: Arc<str> = rec.render().into();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.seq += 1;
        let seq = ring.seq;
        if ring.lines.len() >= self.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back(Stored {
            seq,
            log_type: kind.log_type,
            subtype: kind.subtype,
            line: line.clone(),
        });
        let l = Arc::new(LogLine {
            seq,
            log_type: kind.log_type,
            subtype: kind.subtype,
            record: rec,
            line,
        });
        for sink in &ring.sinks {
            sink(&l);
        }
        l
    }

    /// The sequence number of the last log written (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).seq
    }

    /// Registers a consumer that sees every line, in order, none missed: first the lines the
    /// memory ring holds, then every line written from now on (the log forwarder). It runs
    /// under the writer's lock: it must be quick (hand the line to a queue) and must not write
    /// logs.
    pub fn add_sink(&self, sink: impl Fn(&Arc<LogLine>) + Send + Sync + 'static) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let floor = ring.imported_upto;
        for l in ring.lines.iter().filter(|l| l.seq > floor) {
            sink(&l.load());
        }
        ring.sinks.push(Box::new(sink));
    }

    /// The memory log for a lab snapshot.
    pub fn export(&self) -> SavedLogs {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        SavedLogs {
            seq: ring.seq,
            lines: ring
                .lines
                .iter()
                .map(|l| SavedLog {
                    seq: l.seq,
                    log_type: l.log_type.to_string(),
                    subtype: l.subtype.to_string(),
                    line: l.line.to_string(),
                })
                .collect(),
        }
    }

    /// Replaces the memory log with a snapshot's (at start, before any consumer registers):
    /// the sequence continues from the snapshot's; the imported lines are not handed to sinks
    /// registered afterwards (they were forwarded before the snapshot was taken).
    pub fn import(&self, saved: &SavedLogs) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: VecDeque<Stored> = saved
            .lines
            .iter()
            .filter(|l| l.seq <= saved.seq)
            .map(|l| Stored {
                seq: l.seq,
                log_type: intern(&l.log_type),
                subtype: intern(&l.subtype),
                line: l.line.as_str().into(),
            })
            .collect();
        while lines.len() > self.capacity {
            lines.pop_front();
        }
        ring.lines = lines;
        ring.seq = saved.seq;
        ring.imported_upto = saved.seq;
    }

    /// Like [`add_sink`](Self::add_sink) for lines written from now on only (a trigger must not
    /// fire for logs written before it started).
    pub fn add_tap(&self, tap: impl Fn(&Arc<LogLine>) + Send + Sync + 'static) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.sinks.push(Box::new(tap));
    }

    /// An `event`/`system` log with `logdesc` (the fields after `vd=`).
    pub fn event_system(
        &self,
        logid: &str,
        level: &str,
        logdesc: &str,
        body: impl FnOnce(&mut LogRecord),
    ) -> Arc<LogLine> {
        self.write(
            LogKind {
                logid,
                log_type: "event",
                subtype: "system",
                eventtype: None,
                level,
            },
            |r| {
                r.str("logdesc", logdesc);
                body(r);
            },
        )
    }

    /// Logs of `log_type`/`subtype` in the memory ring, newest first (FortiOS log API order),
    /// skipping `start` and returning at most `rows`. Also returns the total count.
    pub fn query(
        &self,
        log_type: &str,
        subtype: &str,
        start: usize,
        rows: usize,
    ) -> (Vec<Arc<LogLine>>, usize) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut out = Vec::new();
        for l in ring.lines.iter().rev().filter(|l| l.is(log_type, subtype)) {
            if total >= start && out.len() < rows {
                out.push(l.load());
            }
            total += 1;
        }
        (out, total)
    }

    /// Like [`LogWriter::query`], counting and returning only the logs `pred` accepts.
    pub fn query_where(
        &self,
        log_type: &str,
        subtype: &str,
        start: usize,
        rows: usize,
        pred: impl Fn(&LogLine) -> bool,
    ) -> (Vec<Arc<LogLine>>, usize) {
        // Parse outside the writer's lock: take the candidates' handles first.
        let candidates: Vec<Stored> = {
            let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            ring.lines
                .iter()
                .rev()
                .filter(|l| l.is(log_type, subtype))
                .cloned()
                .collect()
        };
        let mut total = 0;
        let mut out = Vec::new();
        for l in candidates.iter().map(Stored::load) {
            if !pred(&l) {
                continue;
            }
            if total >= start && out.len() < rows {
                out.push(l);
            }
            total += 1;
        }
        (out, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_sees_every_line_in_order_even_past_the_ring() {
        // Ring of 2: the sink gets the ring's lines first, then every new line, although the
        // ring (and a lagging broadcast receiver) would long have dropped them.
        let w = LogWriter::new("FGT-LAB", "FGVM01TM00000001", "6.4.4", LabClock::real(), 2);
        let write = |i: u32| {
            w.event_system("0100032001", "information", "Admin login successful", |r| {
                r.str("user", format!("u{i}"));
            });
        };
        for i in 0..5 {
            write(i);
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        w.add_sink(move |l| {
            // Replayed lines come back parsed from the ring: the same record.
            assert_eq!(
                l.record.to_json(),
                LogRecord::parse(&l.line).unwrap().to_json()
            );
            s2.lock().unwrap().push(l.seq);
        });
        let tapped = Arc::new(Mutex::new(Vec::new()));
        let t2 = tapped.clone();
        w.add_tap(move |l| t2.lock().unwrap().push(l.seq));
        for i in 5..10_000 {
            write(i);
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.first(), Some(&4), "the ring's two lines first");
        let tapped = tapped.lock().unwrap();
        assert_eq!(tapped.first(), Some(&6), "a tap: from now on only");
        assert_eq!(tapped.len(), 9_995);
        assert_eq!(seen.len(), 2 + 9_995);
        assert!(
            seen.windows(2).all(|p| p[1] == p[0] + 1),
            "in order, none missing"
        );
    }

    #[test]
    fn a_snapshot_of_the_memory_log_imports_without_being_forwarded_again() {
        let w = LogWriter::new("FGT-LAB", "FGVM01TM00000001", "6.4.4", LabClock::real(), 3);
        for i in 0..4 {
            w.event_system("0100032001", "information", "Admin login successful", |r| {
                r.str("user", format!("u{i}"));
            });
        }
        let saved = w.export();
        assert_eq!(saved.seq, 4);
        assert_eq!(saved.lines.len(), 3);
        let json = serde_json::to_string(&saved).unwrap();
        let back: SavedLogs = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let w2 = LogWriter::new("FGT-LAB", "FGVM01TM00000001", "6.4.4", LabClock::real(), 3);
        w2.import(&back);
        assert_eq!(w2.last_seq(), 4);
        let (rows, total) = w2.query("event", "system", 0, 10);
        assert_eq!(total, 3);
        assert_eq!(rows[0].record.text("user").unwrap(), "u3");
        // A sink registered after the import gets only what is written afterwards.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        w2.add_sink(move |l| s2.lock().unwrap().push(l.seq));
        w2.event_system("0100032001", "information", "Admin login successful", |r| {
            r.str("user", "after");
        });
        assert_eq!(*seen.lock().unwrap(), vec![5]);
        assert_eq!(
            w2.query("event", "system", 0, 10).1,
            3,
            "ring capacity kept"
        );
    }

    #[test]
    fn writes_event_logs_with_the_64_header_and_keeps_a_ring() {
        let w = LogWriter::new("FGT-LAB", "FGVM01TM00000001", "6.4.4", LabClock::real(), 2);
        for i in 0..3 {
            w.event_system("0100032001", "information", "Admin login successful", |r| {
                r.str("user", format!("u{i}"));
            });
        }
        let (rows, total) = w.query("event", "system", 0, 10);
        assert_eq!(total, 2);
        assert_eq!(rows[0].record.text("user").unwrap(), "u2");
        let keys: Vec<&str> = rows[0].record.keys().collect();
        assert_eq!(
            &keys[..8],
            [
                "date",
                "time",
                "devname",
                "devid",
                "eventtime",
                "tz",
                "logid",
                "type"
            ]
        );
        assert!(rows[0].line.contains("logid=\"0100032001\" type=\"event\" subtype=\"system\" level=\"information\" vd=\"root\" logdesc=\"Admin login successful\""));
    }
}
