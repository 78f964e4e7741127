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

use fortilab_core::LabClock;

/// The merged timeline.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<Value>,
    clock: Arc<Mutex<LabClock>>,
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
        let (tx, _) = broadcast::channel(65_536);
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
        }
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

    /// An event of the orchestrator itself (`device: "fortilab"`).
    pub fn note(&self, kind: &str, mut data: Value) {
        if let Value::Object(m) = &mut data {
            m.insert("device".into(), json!("fortilab"));
            m.insert("kind".into(), json!(kind));
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
                        "link.up",
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
                                        m.insert("kind".into(), json!("gap"));
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
                "link.down",
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

/// Routine events the terminal timeline leaves out (they stay in the timeline, the dashboard
/// and `--json`): FortiClient keep-alives arrive every few hundred milliseconds in fast timing,
/// and API request records would echo every poll of a scenario.
pub fn is_routine(ev: &Value) -> bool {
    ev.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with(".keepalive") || k == "api.request")
}

/// Prints the timeline as it grows, in lab-time order (a short reorder window lets slower
/// streams catch up), until `shutdown`. `json` prints one JSON object per line instead.
pub async fn print_live(timeline: Timeline, json_lines: bool, shutdown: CancellationToken) {
    let mut rx = timeline.subscribe();
    let colour = !json_lines && std::io::stdout().is_terminal();
    let clock = timeline.clock();
    let mut pending: Vec<Value> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = rx.recv() => match r {
                Ok(ev) => pending.push(ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    println!("… {n} events not shown (terminal too slow)");
                }
                Err(_) => break,
            },
            _ = tick.tick() => {
                pending.sort_by_key(|e| e.get("ts").and_then(Value::as_i64).unwrap_or(0));
                for ev in pending.drain(..) {
                    if !json_lines && is_routine(&ev) {
                        continue;
                    }
                    if json_lines {
                        println!("{ev}");
                    } else {
                        println!("{}", format_event(&ev, &clock, colour));
                    }
                }
            }
        }
    }
    pending.sort_by_key(|e| e.get("ts").and_then(Value::as_i64).unwrap_or(0));
    for ev in pending {
        if !json_lines && is_routine(&ev) {
            continue;
        }
        if json_lines {
            println!("{ev}");
        } else {
            println!("{}", format_event(&ev, &clock, colour));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
