//! Log intake: FortiOS lines parsed into rows (large batches on two threads), run through the
//! IOC engine and queued for the store's durable commit in arrival order; once committed, the
//! lab event, alerts and notifications. Also FortiAnalyzer's own event logs.

use fortilab_core::EventKind;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::Faz;
use crate::ioc::Change;
use crate::store::{parse_row, Row};

/// Batches at least this large are parsed on two threads.
const PARALLEL_PARSE: usize = 1000;

/// Lines parsed by [`Faz::parse_lines`], ready for [`Faz::submit`].
#[derive(Debug)]
pub struct Parsed {
    rows: Vec<Row>,
    n: usize,
    unparsed: u64,
    sample: Option<String>,
    now: i64,
    durability: crate::store::Durability,
    chain: Option<crate::store::Chain>,
}

impl Parsed {
    /// Makes the batch continue a [`crate::store::Chain`] (the raw log indexer's read
    /// position): committed only if the chain's key holds the expected value.
    pub fn chained(mut self, chain: crate::store::Chain) -> Self {
        self.chain = Some(chain);
        self
    }

    /// Marks lines nobody is told are stored (syslog): [`Faz::submit`] commits them without
    /// waiting for an fsync of their own ([`crate::store::Durability::Unacknowledged`]).
    pub fn unacknowledged(mut self) -> Self {
        self.durability = crate::store::Durability::Unacknowledged;
        self
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// A batch queued for the durable commit by [`Faz::submit`].
#[derive(Debug)]
pub struct Submitted {
    pending: crate::store::Pending,
    changes: Vec<Change>,
    sender: String,
    n: usize,
    unparsed: u64,
    sample: Option<String>,
}

impl Submitted {
    /// Waits for the commit, then raises the lab event, alerts and notifications. Returns the
    /// sender's last stored sequence.
    pub fn finish(self, faz: &Faz) -> Result<u64, String> {
        let last = match self.pending.wait() {
            Ok(l) => l,
            // A refused chained batch follows a failure already reported.
            Err(e) if e.to_string() == crate::store::STALE_CHAIN => return Err(e.to_string()),
            Err(e) => return Err(faz.store_failed(e.to_string())),
        };
        if faz.store_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("the log store accepts logs again");
            faz.bus
                .emit(EventKind::StoreRecovered, json!({"sender": self.sender}));
        }
        if self.n > 0 {
            faz.bus.emit(
                EventKind::LogReceived,
                json!({"from": self.sender, "count": self.n, "unparsed": self.unparsed,
                       "last_seq": last, "sample": self.sample}),
            );
        }
        faz.handle_changes(self.changes, false);
        Ok(last)
    }
}

impl Faz {
    /// Parses and stores a batch durably, runs the IOC engine on it, then raises alerts and
    /// notifications. `first_seq` 0: unsequenced (syslog, FAZ's own event log). Returns the
    /// sender's last stored sequence.
    pub fn ingest(
        &self,
        sender: &str,
        from_client: bool,
        first_seq: u64,
        lines: Vec<String>,
    ) -> Result<u64, String> {
        let parsed = self.parse_lines(from_client, lines);
        self.submit(sender, from_client, first_seq, parsed)?
            .finish(self)
    }

    /// Parses lines into rows (large batches on two threads). No side effects: callers may
    /// parse several batches at once and [`Faz::submit`] them in order.
    pub fn parse_lines(&self, from_client: bool, lines: Vec<String>) -> Parsed {
        let now = self.now();
        let tz = self.clock.tz_minutes();
        let n = lines.len();
        let sample = lines
            .first()
            .map(|l| l.chars().take(300).collect::<String>());
        let parse = |part: &[String]| -> (Vec<Row>, u64) {
            let mut bad = 0u64;
            let rows = part
                .iter()
                .map(|l| {
                    let (r, ok) = parse_row(l, from_client, now, tz);
                    bad += (!ok) as u64;
                    r
                })
                .collect();
            (rows, bad)
        };
        // Large batches are parsed on two threads (the log channel hands us up to 5000 lines).
        let (rows, unparsed) = if lines.len() >= PARALLEL_PARSE {
            let (a, b) = lines.split_at(lines.len() / 2);
            let (ra, rb) = std::thread::scope(|s| {
                let h = s.spawn(|| parse(b));
                let ra = parse(a);
                (ra, h.join().unwrap_or_default())
            });
            let mut rows = ra.0;
            rows.extend(rb.0);
            (rows, ra.1 + rb.1)
        } else {
            parse(&lines)
        };
        Parsed {
            rows,
            n,
            unparsed,
            sample,
            now,
            durability: Default::default(),
            chain: None,
        }
    }

    /// Runs the IOC engine on parsed rows and queues them for the durable commit (in call
    /// order); [`Submitted::finish`] waits for the commit and raises alerts and notifications.
    pub fn submit(
        &self,
        sender: &str,
        from_client: bool,
        first_seq: u64,
        parsed: Parsed,
    ) -> Result<Submitted, String> {
        let Parsed {
            rows,
            n,
            unparsed,
            sample,
            now,
            durability,
            chain,
        } = parsed;
        self.counters.log_batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .log_lines
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters
            .unparsed_lines
            .fetch_add(unparsed, Ordering::Relaxed);
        let client_name = if from_client {
            self.device(sender).map(|d| d.hostname)
        } else {
            None
        };
        let ioc_on = self.ioc.settings().status;
        let mut changes: Vec<Change> = Vec::new();
        let day = self.day_of(now);
        let pending = self
            .store
            .submit_chained(durability, chain, sender, first_seq, rows, now, |rows| {
                if !ioc_on {
                    return Vec::new();
                }
                self.ioc_hook(sender, rows, client_name.as_deref(), now, day, &mut changes)
            })
            .map_err(|e| self.store_failed(e.to_string()))?;
        Ok(Submitted {
            pending,
            changes,
            sender: sender.to_string(),
            n,
            unparsed,
            sample,
        })
    }

    /// Reports a failed write outside the SQL store (a raw log file): counted, and the first
    /// of a run raises a `store.error` lab event.
    pub fn store_error(&self, msg: String) {
        let _ = self.store_failed(msg);
    }

    /// Counts a failed commit; the first of a run raises a `store.error` lab event.
    fn store_failed(&self, msg: String) -> String {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        if !self.store_failing.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %msg, "the log store refuses logs");
            self.bus.emit(EventKind::StoreError, json!({"error": msg}));
        }
        msg
    }

    /// One of FAZ's own event logs about an administrator (`ui` is e.g. `ssh(10.0.0.1)` or
    /// `jsonrpc(10.0.0.1)`): logins, failed logins, configuration changes.
    #[allow(clippy::too_many_arguments)]
    pub fn admin_event(
        &self,
        logid: &str,
        level: &str,
        logdesc: &str,
        user: &str,
        ui: &str,
        action: &str,
        status: &str,
        msg: &str,
    ) {
        let now_ns = self.clock.now_ns();
        let (date, time) = self.clock.date_time(now_ns);
        let mut r = fortilab_core::logfmt::LogRecord::new();
        r.bare("date", date).bare("time", time);
        r.str("devname", self.bus.device())
            .str("devid", self.id.serial.clone());
        r.int("eventtime", now_ns).str("tz", self.clock.tz_string());
        r.str("logid", logid)
            .str("type", "event")
            .str("subtype", "system");
        r.str("level", level)
            .str("vd", "root")
            .str("logdesc", logdesc);
        r.str("user", user)
            .str("ui", ui)
            .str("action", action)
            .str("status", status)
            .str("msg", msg);
        let serial = self.id.serial.clone();
        let _ = self.ingest(&serial, false, 0, vec![r.render()]);
    }

    /// Writes one of FAZ's own event logs (jsonapi-log) into the store.
    pub fn local_event(&self, logdesc: &str, action: &str, user: &str, msg: &str) {
        let now_ns = self.clock.now_ns();
        let (date, time) = self.clock.date_time(now_ns);
        let mut r = fortilab_core::logfmt::LogRecord::new();
        r.bare("date", date).bare("time", time);
        r.str("devname", self.id.hostname.clone())
            .str("devid", self.id.serial.clone());
        r.int("eventtime", now_ns).str("tz", self.clock.tz_string());
        r.str("logid", "0031040031")
            .str("type", "event")
            .str("subtype", "system");
        r.str("level", "information")
            .str("vd", "root")
            .str("logdesc", logdesc);
        r.str("user", user).str("action", action).str("msg", msg);
        let serial = self.id.serial.clone();
        let _ = self.ingest(&serial, false, 0, vec![r.render()]);
    }
}
