//! The merged timeline: every device's `/_lab/events` stream, followed, merged and kept.
//!
//! A follower per device process reads its server-sent events, resumes with `?since=<last seq>`
//! after a disconnect (a killed and restarted device), and records `link.down` / `link.up`
//! events plus any `gap` the device reports. Events are kept in arrival order with their lab
//! time; readers sort by lab time.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use fortilab_core::EventKind;
use fortilab_core::LabClock;

/// The merged timeline.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<Value>,
    clock: Arc<Mutex<LabClock>>,
    /// Every event also goes to the files (`fortilab up`), the memory keeping only a ring.
    journal: Option<crate::journal::Journal>,
}

struct Inner {
    events: std::collections::VecDeque<Value>,
    /// Events ever pushed since the last [`Timeline::clear`] (the arrival index of the next).
    next: u64,
    /// Incremented by [`Timeline::clear`] (a lab reset).
    generation: u64,
    /// At most this many events are kept (the oldest are dropped); `usize::MAX` by default.
    limit: usize,
    dropped: u64,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline").finish_non_exhaustive()
    }
}

/// What a reader that attaches to the live timeline gets: the kept events from an arrival
/// index on, and a receiver for everything pushed after them.
pub struct Attach {
    /// Generation of the timeline (changes on every [`Timeline::clear`]).
    pub generation: u64,
    /// Arrival index of the first event in `events`.
    pub first: u64,
    pub events: Vec<Value>,
    /// Events that were asked for but are no longer kept.
    pub missed: u64,
    pub rx: broadcast::Receiver<Value>,
}

impl Timeline {
    pub fn new(clock: LabClock) -> Self {
        // Live readers (the terminal, dashboard streams) that fall this far behind are told how
        // many events they missed (`Lagged`, a `gap` event in the dashboard).
        let (tx, _) = broadcast::channel(LIVE_QUEUE);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                events: Default::default(),
                next: 0,
                generation: 1,
                limit: usize::MAX,
                dropped: 0,
            })),
            tx,
            clock: Arc::new(Mutex::new(clock)),
            journal: None,
        }
    }

    /// Writes every event to rotated files as well ([`crate::journal`]).
    pub fn with_journal(mut self, journal: crate::journal::Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The journal's counters, when there is one.
    pub fn journal_report(&self) -> Option<Value> {
        self.journal.as_ref().map(|j| j.report())
    }

    /// Keeps at most `limit` events (a long-running `fortilab up`); the oldest are dropped.
    pub fn with_limit(self, limit: usize) -> Self {
        self.inner.lock().unwrap().limit = limit.max(1);
        self
    }

    pub fn clock(&self) -> LabClock {
        *self.clock.lock().unwrap()
    }

    /// A lab restarted with a new clock (reset, speed change).
    pub fn set_clock(&self, clock: LabClock) {
        *self.clock.lock().unwrap() = clock;
    }

    /// Adds an event (from a device, or the orchestrator's own).
    pub fn push(&self, ev: Value) {
        if let Some(j) = &self.journal {
            j.record(&ev);
        }
        let mut g = self.inner.lock().unwrap();
        g.events.push_back(ev.clone());
        g.next += 1;
        if g.events.len() > g.limit {
            g.events.pop_front();
            g.dropped += 1;
        }
        // Sent under the lock, so that [`Timeline::attach`] sees every event exactly once.
        let _ = self.tx.send(ev);
    }

    /// An event of the orchestrator itself (`device: "fortilab"`), of a catalog kind.
    pub fn note(&self, kind: EventKind, mut data: Value) {
        if let Value::Object(m) = &mut data {
            m.insert("device".into(), json!("fortilab"));
            m.insert("kind".into(), json!(kind.name()));
            m.insert("ts".into(), json!(self.clock().now_ns()));
        }
        self.push(data);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.tx.subscribe()
    }

    /// The kept events from arrival index `since` on (of the current generation; another
    /// generation reads from the start) plus a receiver for what follows, atomically.
    pub fn attach(&self, generation: u64, since: u64) -> Attach {
        let g = self.inner.lock().unwrap();
        let rx = self.tx.subscribe();
        let first_kept = g.next - g.events.len() as u64;
        let since = if generation == g.generation {
            since.min(g.next)
        } else {
            0
        };
        let from = since.max(first_kept);
        let events = g
            .events
            .iter()
            .skip((from - first_kept) as usize)
            .cloned()
            .collect();
        Attach {
            generation: g.generation,
            first: from,
            events,
            missed: from - since,
            rx,
        }
    }

    /// Forgets every event (a lab reset); readers see a new generation.
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap();
        g.events.clear();
        g.next = 0;
        g.generation += 1;
        g.dropped = 0;
    }

    pub fn generation(&self) -> u64 {
        self.inner.lock().unwrap().generation
    }

    /// Events dropped because of the limit.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap().dropped
    }

    /// Everything kept, in lab-time order.
    pub fn snapshot(&self) -> Vec<Value> {
        let mut v: Vec<Value> = self.inner.lock().unwrap().events.iter().cloned().collect();
        v.sort_by_key(|e| e.get("ts").and_then(Value::as_i64).unwrap_or(0));
        v
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events that match `pred`, in lab-time order.
    pub fn find(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.snapshot().into_iter().filter(|e| pred(e)).collect()
    }
}

/// Events a live reader may fall behind before it misses some.
pub const LIVE_QUEUE: usize = 8192;

/// Follows one device process's event stream until `shutdown`.
pub async fn follow(
    label: String,
    base: String,
    client: reqwest::Client,
    timeline: Timeline,
    shutdown: CancellationToken,
) {
    let mut last: u64 = 0;
    let mut was_up = false;
    let mut announced_down = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let url = format!("{base}/_lab/events?since={last}");
        let resp = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = client.get(&url).send() => r,
        };
        match resp {
            Ok(r) if r.status().is_success() => {
                if was_up || announced_down {
                    timeline.note(
                        EventKind::LinkUp,
                        json!({"source": label, "summary": format!("{label} events reconnected")}),
                    );
                }
                was_up = true;
                announced_down = false;
                let mut stream = r.bytes_stream();
                let mut buf: Vec<u8> = Vec::new();
                let mut event_name = String::new();
                loop {
                    let chunk = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = stream.next() => c,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    buf.extend_from_slice(&chunk);
                    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let line = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\r', '\n'])
                            .to_string();
                        if let Some(name) = line.strip_prefix("event:") {
                            event_name = name.trim().to_string();
                        } else if let Some(data) = line.strip_prefix("data:") {
                            if let Ok(mut v) = serde_json::from_str::<Value>(data.trim()) {
                                if event_name == "gap" {
                                    if let Value::Object(m) = &mut v {
                                        m.insert("kind".into(), json!(EventKind::Gap.name()));
                                        m.insert("source".into(), json!(label));
                                        m.entry("ts").or_insert(json!(timeline.clock().now_ns()));
                                        m.entry("device").or_insert(json!(label));
                                    }
                                } else if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
                                    if seq <= last && last != 0 {
                                        continue;
                                    }
                                    last = seq;
                                }
                                if let Value::Object(m) = &mut v {
                                    m.insert("source".into(), json!(label));
                                }
                                timeline.push(v);
                            }
                        } else if line.is_empty() {
                            event_name.clear();
                        }
                    }
                }
            }
            _ => {}
        }
        if was_up && !announced_down {
            timeline.note(
                EventKind::LinkDown,
                json!({"source": label, "summary": format!("{label} events lost; reconnecting")}),
            );
            announced_down = true;
            // A restarted device starts its sequence again from 1.
            last = 0;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// One compact line for an event: lab time, device, kind, what happened.
pub fn format_event(ev: &Value, clock: &LabClock, colour: bool) -> String {
    let ts = ev.get("ts").and_then(Value::as_i64).unwrap_or(0);
    let (_, time) = clock.date_time(ts);
    let ms = (ts.rem_euclid(1_000_000_000)) / 1_000_000;
    // Device names, kinds and values can come from outside the lab (an endpoint's host name
    // from EMS telemetry): control characters are shown, not sent to the terminal.
    let device = fortilab_core::text::printable(
        ev.get("device").and_then(Value::as_str).unwrap_or("?"),
        false,
    );
    let device = device.as_ref();
    let kind = fortilab_core::text::printable(
        ev.get("kind").and_then(Value::as_str).unwrap_or("?"),
        false,
    );
    let kind = kind.as_ref();
    let summary = summarize(ev);
    let summary = fortilab_core::text::printable(&summary, false);
    if colour {
        let c = match device {
            d if d.starts_with("FGT") || d.contains("fortigate") => "\x1b[31m",
            d if d.starts_with("FAZ") || d.contains("analyzer") => "\x1b[34m",
            d if d.starts_with("EMS") || d == "ems" => "\x1b[35m",
            "fortilab" => "\x1b[90m",
            "internet" => "\x1b[36m",
            _ => "\x1b[32m",
        };
        format!("{time}.{ms:03} {c}{device:<10}\x1b[0m \x1b[1m{kind:<24}\x1b[0m {summary}")
    } else {
        format!("{time}.{ms:03} {device:<10} {kind:<24} {summary}")
    }
}

/// What an event says, in a few words: its `summary` or `msg`, else its fields.
pub fn summarize(ev: &Value) -> String {
    for k in ["summary", "msg", "message"] {
        if let Some(s) = ev.get(k).and_then(Value::as_str) {
            return s.to_string();
        }
    }
    let mut parts = Vec::new();
    if let Some(m) = ev.as_object() {
        for (k, v) in m {
            if matches!(
                k.as_str(),
                "seq" | "ts" | "device" | "kind" | "source" | "raw" | "line"
            ) {
                continue;
            }
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let s = if s.len() > 60 {
                format!(
                    "{}…",
                    &s[..s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len())]
                )
            } else {
                s
            };
            parts.push(format!("{k}={s}"));
            if parts.len() >= 5 {
                break;
            }
        }
    }
    parts.join(" ")
}

/// The catalog entry of an event's kind (none for a kind the catalog does not know).
pub fn kind_of(ev: &Value) -> Option<EventKind> {
    EventKind::from_name(ev.get("kind").and_then(Value::as_str)?)
}

/// Routine events the terminal timeline leaves out (they stay in the timeline, the dashboard
/// and `--json`): the catalog's `routine` kinds (FortiClient keep-alives arrive every few
/// hundred milliseconds in fast timing, and API request records would echo every poll of a
/// scenario).
pub fn is_routine(ev: &Value) -> bool {
    kind_of(ev).is_some_and(|k| k.spec().routine)
}

/// Per-request events: one per proxied request or stored log batch (the catalog's
/// `per_request` category). The terminal shows the first few of each window one by one and
/// folds the rest into one summary line per window.
pub fn per_request_kind(ev: &Value) -> Option<&'static str> {
    kind_of(ev)?.spec().per_request
}

/// How the terminal timeline folds per-request events (pure; unit-tested): in each `window`,
/// the first `shown` per-request events are printed, the rest counted; at the end of a window
/// in which some were folded, one line per category says how many there were.
#[derive(Debug)]
pub struct Summariser {
    window: Duration,
    shown: usize,
    started: Duration,
    printed: usize,
    folded: u64,
    /// category → (events, blocked) in the current window.
    counts: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

impl Summariser {
    pub fn new(window: Duration, shown: usize, now: Duration) -> Self {
        Summariser {
            window,
            shown,
            started: now,
            printed: 0,
            folded: 0,
            counts: Default::default(),
        }
    }

    /// Whether to print `ev` on its own line (non-routine events always are).
    pub fn offer(&mut self, ev: &Value) -> bool {
        let Some(cat) = per_request_kind(ev) else {
            return true;
        };
        let blocked = matches!(
            ev.get("action").and_then(Value::as_str),
            Some("deny" | "blocked" | "block")
        ) || ev.get("ok") == Some(&Value::Bool(false));
        let n = if cat == "fortianalyzer" {
            ev.get("count").and_then(Value::as_u64).unwrap_or(1)
        } else {
            1
        };
        let c = self.counts.entry(cat).or_default();
        c.0 += n;
        c.1 += blocked as u64;
        if self.printed < self.shown {
            self.printed += 1;
            true
        } else {
            self.folded += 1;
            false
        }
    }

    /// Whether events of the current window were folded (its summary is still to come).
    pub fn folding(&self) -> bool {
        self.folded > 0
    }

    /// At `now`: the summary lines of a finished window in which events were folded.
    pub fn tick(&mut self, now: Duration) -> Vec<String> {
        if now.saturating_sub(self.started) < self.window {
            return Vec::new();
        }
        let secs = now.saturating_sub(self.started).as_secs_f64().round() as u64;
        let mut out = Vec::new();
        if self.folded > 0 {
            for (cat, (n, blocked)) in &self.counts {
                let what = match *cat {
                    "proxy" => format!("{} requests ({} blocked)", group(*n), group(*blocked)),
                    "webfilter" => format!(
                        "{} web filter logs ({} blocked)",
                        group(*n),
                        group(*blocked)
                    ),
                    "internet" => format!("{} site requests", group(*n)),
                    "fortianalyzer" => format!("{} logs stored", group(*n)),
                    "endpoints" => format!("{} fetches ({} failed)", group(*n), group(*blocked)),
                    other => format!("{} {other} events", group(*n)),
                };
                out.push(format!("{cat}: {what} in the last {secs} s"));
            }
            out.push(format!(
                "fortilab: {} per-request events folded into the lines above (all are in the dashboard and the timeline files)",
                group(self.folded)
            ));
        }
        self.started = now;
        self.printed = 0;
        self.folded = 0;
        self.counts.clear();
        out
    }
}

/// `12345` → `12,345`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Prints the timeline as it grows, in lab-time order (a short reorder window lets slower
/// streams catch up), until `shutdown`. `json` prints one JSON object per line instead.
/// Per-request events beyond a few per 10 s are folded into one summary line per category
/// ([`Summariser`]); `--json` prints every event.
pub async fn print_live(timeline: Timeline, json_lines: bool, shutdown: CancellationToken) {
    let mut rx = timeline.subscribe();
    let colour = !json_lines && std::io::stdout().is_terminal();
    let clock = timeline.clock();
    let mut pending: Vec<Value> = Vec::new();
    // The reorder window: events are printed 50 ms after the first of a batch arrived; an idle
    // lab arms no timer (while events are folded, it runs until the window's summary is out).
    const REORDER: Duration = Duration::from_millis(50);
    let mut flush_at: Option<tokio::time::Instant> = None;
    let t0 = std::time::Instant::now();
    let mut fold = Summariser::new(Duration::from_secs(10), 20, t0.elapsed());
    let mut lagged = 0u64;
    let print = |pending: &mut Vec<Value>, fold: &mut Summariser| {
        pending.sort_by_key(|e| e.get("ts").and_then(Value::as_i64).unwrap_or(0));
        let mut out = std::io::stdout().lock();
        use std::io::Write as _;
        // A window that ended while the lab was idle ends before these events.
        if !json_lines {
            for l in fold.tick(t0.elapsed()) {
                let _ = writeln!(out, "{l}");
            }
        }
        for ev in pending.drain(..) {
            if json_lines {
                let _ = writeln!(out, "{ev}");
                continue;
            }
            if is_routine(&ev) || !fold.offer(&ev) {
                continue;
            }
            let _ = writeln!(out, "{}", format_event(&ev, &clock, colour));
        }
        if !json_lines {
            for l in fold.tick(t0.elapsed()) {
                let _ = writeln!(out, "{l}");
            }
        }
    };
    loop {
        let flush = async move {
            match flush_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = rx.recv() => match r {
                Ok(ev) => {
                    pending.push(ev);
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + REORDER);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    lagged += n;
                    println!("… {n} events not shown (terminal too slow; {lagged} in all)");
                }
                Err(_) => break,
            },
            _ = flush => {
                print(&mut pending, &mut fold);
                flush_at = fold.folding().then(|| tokio::time::Instant::now() + REORDER);
            }
        }
    }
    print(&mut pending, &mut fold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_events_beyond_a_few_are_folded_into_one_line_per_window() {
        let w = Duration::from_secs(10);
        let mut f = Summariser::new(w, 3, Duration::ZERO);
        let req = |action: &str| json!({"kind": "log.traffic", "action": action});
        let mut shown = 0;
        for i in 0..12_345 {
            if f.offer(&req(if i % 1000 == 0 { "deny" } else { "accept" })) {
                shown += 1;
            }
        }
        // Other events are never folded.
        assert!(f.offer(&json!({"kind": "stitch.run"})));
        assert_eq!(shown, 3);
        assert!(f.tick(Duration::from_secs(5)).is_empty());
        let lines = f.tick(Duration::from_secs(10));
        assert_eq!(
            lines[0],
            "proxy: 12,345 requests (13 blocked) in the last 10 s"
        );
        assert!(
            lines[1].contains("12,342 per-request events folded"),
            "{lines:?}"
        );
        // A quiet window prints no summary; a window with only a few shows them one by one.
        assert!(f.offer(&req("accept")));
        assert!(f.tick(Duration::from_secs(20)).is_empty());
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
    }

    #[test]
    fn formats_compact_lines() {
        let clock = LabClock::new(0, 0, 1.0, 0);
        let ev = json!({"seq": 1, "ts": 3_723_004_000_000i64, "device": "FGT-LAB", "kind": "stitch.run", "stitch": "CHQ"});
        assert_eq!(
            format_event(&ev, &clock, false),
            "01:02:03.004 FGT-LAB    stitch.run               stitch=CHQ"
        );
        let ev = json!({"ts": 0, "device": "FAZ-LAB", "kind": "x", "summary": "hello"});
        assert!(format_event(&ev, &clock, false).ends_with("hello"));
        // A host name from EMS telemetry with terminal escapes is shown, not obeyed.
        let ev = json!({"ts": 0, "device": "EMS-LAB", "kind": "ems.endpoint.registered",
                        "name": "PC\u{1b}]0;owned\u{7}\u{1b}[2J<b>"});
        let line = format_event(&ev, &clock, true);
        assert!(line.contains("PC\\x1b]0;owned\\x07\\x1b[2J<b>"), "{line}");
    }

    #[test]
    fn attach_resumes_by_arrival_index_and_generation() {
        let t = Timeline::new(LabClock::real()).with_limit(3);
        for i in 0..5 {
            t.push(json!({"ts": i, "n": i}));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.dropped(), 2);
        let gen = t.generation();
        // Asking from 0: events 0 and 1 are gone.
        let a = t.attach(gen, 0);
        assert_eq!((a.first, a.missed, a.events.len()), (2, 2, 3));
        // Resuming after index 3 gives event 4 only.
        let mut a = t.attach(gen, 4);
        assert_eq!(a.events, vec![json!({"ts": 4, "n": 4})]);
        t.push(json!({"ts": 9}));
        assert_eq!(a.rx.try_recv().unwrap(), json!({"ts": 9}));
        // A reset starts a new generation; an old reader reads from the start.
        t.clear();
        assert!(t.is_empty());
        t.push(json!({"ts": 1}));
        let a = t.attach(gen, 4);
        assert_eq!((a.generation, a.first, a.events.len()), (gen + 1, 0, 1));
    }

    #[test]
    fn snapshot_sorts_by_lab_time() {
        let t = Timeline::new(LabClock::real());
        t.push(json!({"ts": 5, "kind": "b"}));
        t.push(json!({"ts": 1, "kind": "a"}));
        let kinds: Vec<String> = t
            .snapshot()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["a", "b"]);
    }
}
