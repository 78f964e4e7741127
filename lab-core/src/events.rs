//! The lab event stream: every device publishes `{seq, ts, device, kind, ...}` JSON objects,
//! served as server-sent events at `/_lab/events` and merged by `fortilab` into one timeline.
//!
//! Each event has a per-device sequence number, so a reader that reconnects (the dashboard after
//! a device restart) asks for `?since=N` and sees exactly what it missed, or learns of a gap when
//! the history ring no longer holds it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::LabClock;

pub mod catalog;
pub use catalog::EventKind;

/// One lab event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabEvent {
    /// Per-device sequence number, from 1.
    pub seq: u64,
    /// Lab time, Unix nanoseconds.
    pub ts: i64,
    /// The device name (`FGT-LAB`, `FAZ-LAB`, `EMS-LAB`, `PC-52`, `internet`).
    pub device: String,
    /// What happened, dotted (`log.webfilter`, `ioc.compromised`, `stitch.run`, `ems.quarantine`).
    pub kind: String,
    /// The product log line the event is about, shared with the device's memory log rather
    /// than copied (a FortiGate writes tens of thousands a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<Arc<str>>,
    /// Event-specific fields.
    #[serde(flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

const HISTORY: usize = 20_000;

struct Inner {
    seq: u64,
    history: VecDeque<Arc<LabEvent>>,
    /// Emitting call sites (file, line, column) whose first event was checked against the
    /// catalog.
    checked: std::collections::HashSet<(usize, u32, u32)>,
    /// What those checks found (see [`EventBus::catalog_mismatches`]).
    mismatches: Vec<String>,
}

/// A device's event publisher. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    device: Arc<Mutex<String>>,
    clock: LabClock,
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<Arc<LabEvent>>,
    /// Cancelled when the device shuts down: open `/_lab/events` streams end, so they do not
    /// hold the HTTP drain for its whole grace period.
    closed: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

impl EventBus {
    pub fn new(device: &str, clock: LabClock) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            device: Arc::new(Mutex::new(device.to_string())),
            clock,
            inner: Arc::new(Mutex::new(Inner {
                seq: 0,
                history: VecDeque::new(),
                checked: Default::default(),
                mismatches: Vec::new(),
            })),
            tx,
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends every open event stream (and every later one at once): the device is shutting
    /// down. Readers reconnect with `?since=` to the next instance.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Closes the streams when `shutdown` is cancelled (see [`EventBus::close`]).
    pub fn close_on(&self, shutdown: &tokio_util::sync::CancellationToken) {
        let (bus, sd) = (self.clone(), shutdown.clone());
        tokio::spawn(async move {
            sd.cancelled().await;
            bus.close();
        });
    }

    /// Renames the device (a hostname change).
    pub fn set_device(&self, name: &str) {
        *self.device.lock().unwrap() = name.to_string();
    }

    pub fn device(&self) -> String {
        self.device.lock().unwrap().clone()
    }

    /// Publishes an event of a catalog kind ([`catalog`]). `data` must be a JSON object with
    /// the kind's fields (anything else is wrapped as `value`).
    #[track_caller]
    pub fn emit(&self, kind: EventKind, data: serde_json::Value) -> Arc<LabEvent> {
        self.publish(&self.device(), kind, None, data)
    }

    /// Publishes an event about a product log line (served as the event's `line`).
    #[track_caller]
    pub fn emit_line(
        &self,
        kind: EventKind,
        line: Arc<str>,
        data: serde_json::Value,
    ) -> Arc<LabEvent> {
        self.publish(&self.device(), kind, Some(line), data)
    }

    /// Publishes an event on behalf of a named sub-device (one endpoint of many).
    #[track_caller]
    pub fn emit_as(&self, device: &str, kind: EventKind, data: serde_json::Value) -> Arc<LabEvent> {
        self.publish(device, kind, None, data)
    }

    /// Events whose fields did not match the catalog (the first event of each emitting call
    /// site is checked; a mismatch is also logged). Empty when every emitter keeps to it.
    pub fn catalog_mismatches(&self) -> Vec<String> {
        self.inner.lock().unwrap().mismatches.clone()
    }

    #[track_caller]
    fn publish(
        &self,
        device: &str,
        kind: EventKind,
        line: Option<Arc<str>>,
        data: serde_json::Value,
    ) -> Arc<LabEvent> {
        let data = match data {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        let at = std::panic::Location::caller();
        let site = (at.file().as_ptr() as usize, at.line(), at.column());
        let mut inner = self.inner.lock().unwrap();
        if inner.checked.len() < 4096 && inner.checked.insert(site) {
            if let Err(e) = catalog::check_fields(kind, &data) {
                tracing::error!(error = %e, at = %at, "lab event does not match the event catalog");
                inner.mismatches.push(format!("{at}: {e}"));
            }
        }
        inner.seq += 1;
        let ev = Arc::new(LabEvent {
            seq: inner.seq,
            ts: self.clock.now_ns(),
            device: device.to_string(),
            kind: kind.name().to_string(),
            line,
            data,
        });
        if inner.history.len() >= HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(ev.clone());
        // Sending under the lock keeps live order equal to sequence order.
        let _ = self.tx.send(ev.clone());
        ev
    }

    /// Events with `seq > since` still held, and whether some were already dropped.
    pub fn history_since(&self, since: u64) -> (Vec<Arc<LabEvent>>, bool) {
        let inner = self.inner.lock().unwrap();
        let first = inner
            .history
            .front()
            .map(|e| e.seq)
            .unwrap_or(inner.seq + 1);
        let gap = since + 1 < first && since < inner.seq;
        (
            inner
                .history
                .iter()
                .filter(|e| e.seq > since)
                .cloned()
                .collect(),
            gap,
        )
    }

    /// A snapshot of the held history plus a live receiver, without losing events in between.
    pub fn subscribe_since(
        &self,
        since: u64,
    ) -> (Vec<Arc<LabEvent>>, bool, broadcast::Receiver<Arc<LabEvent>>) {
        let inner = self.inner.lock().unwrap();
        let rx = self.tx.subscribe();
        let first = inner
            .history
            .front()
            .map(|e| e.seq)
            .unwrap_or(inner.seq + 1);
        let gap = since + 1 < first && since < inner.seq;
        let past = inner
            .history
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect();
        (past, gap, rx)
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap().seq
    }
}

/// Query of `/_lab/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Replay events after this sequence number (default: all held).
    pub since: Option<u64>,
    /// `1`: only the held history, then end the stream (for scripts).
    pub once: Option<u8>,
}

/// The `/_lab/events` handler: server-sent events, one JSON object per event. A `gap` event
/// (`{"kind":"gap","from":..,"to":..}`) tells a reader that events it asked for were dropped.
pub async fn sse_handler(
    State(bus): State<EventBus>,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let since = q.since.unwrap_or(0);
    let (past, gap, rx) = bus.subscribe_since(since);
    let mut last = since;
    let mut head: Vec<Result<Event, Infallible>> = Vec::new();
    if gap {
        let first = past.first().map(|e| e.seq).unwrap_or(bus.last_seq() + 1);
        head.push(Ok(Event::default().event("gap").data(
            serde_json::json!({"kind": EventKind::Gap.name(), "device": bus.device(), "from": since + 1, "to": first - 1})
                .to_string(),
        )));
    }
    for e in &past {
        last = e.seq;
        head.push(Ok(to_sse(e)));
    }
    let once = q.once == Some(1);
    let state = (rx, last, bus.clone(), VecDeque::<Event>::new());
    let live = stream::unfold(
        state,
        move |(mut rx, mut last, bus, mut pending)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((Ok(ev), (rx, last, bus, pending)));
                }
                match rx.recv().await {
                    Ok(e) if e.seq <= last => continue,
                    Ok(e) => {
                        last = e.seq;
                        return Some((Ok(to_sse(&e)), (rx, last, bus, pending)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Refill from the history ring; report what it no longer holds.
                        let (missed, gap) = bus.history_since(last);
                        if gap {
                            let first = missed.first().map(|e| e.seq).unwrap_or(last + 1);
                            pending.push_back(Event::default().event("gap").data(
                            serde_json::json!({"kind":EventKind::Gap.name(),"device":bus.device(),"from":last+1,"to":first-1}).to_string(),
                        ));
                        }
                        for e in &missed {
                            last = e.seq;
                            pending.push_back(to_sse(e));
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let body: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = if once {
        Box::pin(stream::iter(head))
    } else {
        Box::pin(
            stream::iter(head)
                .chain(live)
                .take_until(bus.closed.clone().cancelled_owned()),
        )
    };
    Sse::new(body).keep_alive(KeepAlive::default())
}

fn to_sse(e: &LabEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_history() {
        let bus = EventBus::new("FGT-LAB", LabClock::real());
        bus.emit(EventKind::ConfigChange, serde_json::json!({"path": "firewall policy", "key": "1", "action": "Edit", "attrs": [], "user": "admin", "ui": "GUI", "revision": 1}));
        let e = bus.emit(
            EventKind::StitchTest,
            serde_json::json!({"stitch": "S", "log": {}}),
        );
        assert_eq!(e.seq, 2);
        let (h, gap) = bus.history_since(1);
        assert_eq!(h.len(), 1);
        assert!(!gap);
        assert_eq!(h[0].data["stitch"], "S");
        let json = serde_json::to_value(&*h[0]).unwrap();
        assert_eq!(json["device"], "FGT-LAB");
        assert_eq!(json["kind"], "stitch.test");
        assert!(bus.catalog_mismatches().is_empty());
    }

    #[test]
    fn a_log_event_shares_the_line_and_serializes_it_flat() {
        let bus = EventBus::new("FGT-LAB", LabClock::real());
        let line: Arc<str> = Arc::from(r#"date=2026-11-28 logid="0316013056" msg="x""#);
        let e = bus.emit_line(
            EventKind::LogWebfilter,
            line.clone(),
            serde_json::json!({"summary": "blocked"}),
        );
        assert!(
            Arc::ptr_eq(e.line.as_ref().unwrap(), &line),
            "shared, not copied"
        );
        let json = serde_json::to_value(&*e).unwrap();
        assert_eq!(json["line"], &*line);
        assert_eq!(json["summary"], "blocked");
        // A reader (the orchestrator's timeline) gets the same event back.
        let back: LabEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, *e);
        // Events without a line have no `line` key.
        let plain = bus.emit(EventKind::FazRestart, serde_json::json!({}));
        assert!(serde_json::to_value(&*plain).unwrap().get("line").is_none());
    }

    #[test]
    fn an_event_that_does_not_match_the_catalog_is_reported_once_per_call_site() {
        let bus = EventBus::new("FGT-LAB", LabClock::real());
        for _ in 0..3 {
            bus.emit(EventKind::BannedClear, serde_json::json!({"ips": []}));
        }
        let m = bus.catalog_mismatches();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("events.rs"), "{m:?}");
        assert!(m[0].contains("unknown field `ips`"), "{m:?}");
        // The event is published all the same.
        assert_eq!(bus.last_seq(), 3);
    }
}
