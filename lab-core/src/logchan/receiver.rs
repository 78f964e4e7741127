//! The FortiAnalyzer side of the log channel.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frame::{Frame, FrameError, ReadError};
use super::sender::{read_loop, write_frame, AbortOnDrop};
use super::{
    Hello, HelloReply, LogSink, Notification, RegStatus, ALPN, DEAD_AFTER, HANDSHAKE_TIMEOUT,
    PING_INTERVAL,
};
use crate::clock::LabClock;
use crate::supervise::{catch_panic, Supervisor};

/// The name a panicking connection handler is reported under.
pub const CONNECTION_TASK: &str = "log channel: connection";

/// A connected device.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub serial: String,
    pub hostname: String,
    pub peer: SocketAddr,
    pub status: RegStatus,
    /// Lab time the connection was established, Unix ns.
    pub connected_since_ns: i64,
    /// Last sequence number stored for the device.
    pub last_seq: u64,
}

/// Counters of a receiver (everything since it was created).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiverStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Sessions open now.
    pub active: u64,
    /// Connections refused: failed TLS handshake, missing ALPN, no hello, certificate CN ≠ serial.
    pub refused: u64,
    /// Malformed frames (the connection was closed with an `Error` frame).
    pub malformed: u64,
    /// Frames over 16 MiB (closed likewise).
    pub oversized: u64,
    /// Protocol violations (a frame the client must not send).
    pub protocol_errors: u64,
    pub batches: u64,
    pub lines: u64,
    /// Batches ignored because the device is not authorized.
    pub unauthorized_batches: u64,
    pub store_errors: u64,
    pub notifications_sent: u64,
    pub notifications_acked: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
    malformed: AtomicU64,
    oversized: AtomicU64,
    protocol_errors: AtomicU64,
    batches: AtomicU64,
    lines: AtomicU64,
    unauthorized_batches: AtomicU64,
    store_errors: AtomicU64,
    notifications_sent: AtomicU64,
    notifications_acked: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

enum Ctl {
    Notify(Notification),
    Authorize,
    Close(&'static str),
}

struct Entry {
    conn: u64,
    tx: mpsc::UnboundedSender<Ctl>,
    info: SessionInfo,
}

struct Inner {
    sink: Arc<dyn LogSink>,
    server: Hello,
    clock: LabClock,
    sessions: Mutex<HashMap<String, Entry>>,
    pending: Mutex<HashMap<String, BTreeMap<u64, Notification>>>,
    next_conn: AtomicU64,
    counters: Counters,
    /// Where a connection that panics is reported ([`LogReceiver::set_supervisor`]).
    supervisor: std::sync::OnceLock<Supervisor>,
}

/// The receiving side of the log channel (FortiAnalyzer). Cheap to clone.
#[derive(Clone)]
pub struct LogReceiver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReceiver")
            .field("server", &self.inner.server.serial)
            .finish_non_exhaustive()
    }
}

impl LogReceiver {
    pub fn new(
        sink: Arc<dyn LogSink>,
        server: Hello, /* the FAZ's own identity */
        clock: LabClock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink,
                server,
                clock,
                sessions: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                counters: Counters::default(),
                supervisor: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Reports a connection whose handler panics to `sup` (as [`CONNECTION_TASK`]: counted in
    /// `/_lab/tasks`, a `task.panicked` event); that connection ends, the others and the
    /// listener go on. Without a supervisor the panic is only logged. Set once.
    pub fn set_supervisor(&self, sup: Supervisor) {
        let _ = self.inner.supervisor.set(sup);
    }

    /// Accepts connections until shutdown; the TLS config must require lab-CA client certs and
    /// carry ALPN (added when missing); the client cert CN must equal the hello serial (else
    /// Error + close). On shutdown every session is closed before this returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let tls = if tls.alpn_protocols.iter().any(|p| p == ALPN) {
            tls
        } else {
            let mut c = (*tls).clone();
            c.alpn_protocols.push(ALPN.to_vec());
            Arc::new(c)
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let tracker = TaskTracker::new();
        while let Some((tcp, peer)) =
            crate::http::accept_next(&listener, &shutdown, "log channel").await
        {
            inc(&self.inner.counters.connections);
            let inner = self.inner.clone();
            let acceptor = acceptor.clone();
            let stop = shutdown.child_token();
            tracker.spawn(async move {
                let sup = inner.supervisor.get().cloned();
                if let Err(msg) = catch_panic(handle(inner, acceptor, tcp, peer, stop)).await {
                    match sup {
                        Some(sup) => sup.report_panic(CONNECTION_TASK, &msg),
                        None => {
                            tracing::error!(%peer, panic = %msg, "log channel connection panicked")
                        }
                    }
                }
            });
        }
        drop(listener);
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        Ok(())
    }

    /// Queues a notification for `serial`; delivered now if connected, else on its next
    /// connection; retransmitted on reconnect until NotifyAck. Returns whether it is connected
    /// now. Ids are the caller's (unique per FortiAnalyzer); a second notification with the same
    /// id replaces the first while it is pending.
    pub fn notify(&self, serial: &str, n: Notification) -> bool {
        self.inner
            .pending
            .lock()
            .unwrap()
            .entry(serial.to_string())
            .or_default()
            .insert(n.id, n.clone());
        let sessions = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match sessions.get(serial) {
            Some(e) => e.tx.send(Ctl::Notify(n)).is_ok(),
            None => false,
        }
    }

    /// Tells a connected device it is now registered (after authorization); it then resends.
    /// The sink's `hello` is asked again for the device's last stored sequence.
    pub fn authorize(&self, serial: &str) {
        if let Some(e) = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
        {
            let _ = e.tx.send(Ctl::Authorize);
        }
    }

    /// Closes a device's connection (it reconnects after its reconnect delay).
    pub fn disconnect(&self, serial: &str) {
        if let Some(e) = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
        {
            let _ = e.tx.send(Ctl::Close("closed by the server"));
        }
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .inner
            .sessions
            .lock()
            .unwrap()
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.serial.cmp(&b.serial));
        v
    }

    /// Notifications not yet acknowledged by `serial`.
    pub fn pending_notifications(&self, serial: &str) -> Vec<Notification> {
        self.inner
            .pending
            .lock()
            .unwrap()
            .get(serial)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> ReceiverStats {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReceiverStats {
            connections: g(&c.connections),
            active: g(&c.active),
            refused: g(&c.refused),
            malformed: g(&c.malformed),
            oversized: g(&c.oversized),
            protocol_errors: g(&c.protocol_errors),
            batches: g(&c.batches),
            lines: g(&c.lines),
            unauthorized_batches: g(&c.unauthorized_batches),
            store_errors: g(&c.store_errors),
            notifications_sent: g(&c.notifications_sent),
            notifications_acked: g(&c.notifications_acked),
        }
    }
}

fn count_frame_error(inner: &Inner, e: &FrameError) {
    match e {
        FrameError::Oversized(_) => inc(&inner.counters.oversized),
        _ => inc(&inner.counters.malformed),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn handle(
    inner: Arc<Inner>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            inc(&inner.counters.refused);
            tracing::debug!(%peer, error = %e, "log channel TLS handshake failed");
            return;
        }
        Err(_) => {
            inc(&inner.counters.refused);
            return;
        }
    };
    let cn = crate::tls::peer_common_name(tls.get_ref().1.peer_certificates());
    let alpn_ok = tls.get_ref().1.alpn_protocol() == Some(ALPN);
    let (rd, mut wr) = tokio::io::split(tls);
    let (ftx, mut frx) = mpsc::channel(4);
    let _reader = AbortOnDrop(tokio::spawn(read_loop(rd, ftx)));
    let refuse = |code: &'static str, msg: String| {
        inc(&inner.counters.refused);
        tracing::warn!(%peer, code, "log channel connection refused: {msg}");
        Frame::error(code, msg)
    };
    if !alpn_ok {
        let f = refuse("protocol", "ALPN fortilab-logchan/1 is required".into());
        let _ = write_frame(&mut wr, &f).await;
        return;
    }
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, frx.recv()).await {
        Ok(Some(Ok(Frame::Hello(h)))) => h,
        Ok(Some(Err(ReadError::Frame(e)))) => {
            count_frame_error(&inner, &e);
            let _ = write_frame(&mut wr, &Frame::error(e.code(), e.to_string())).await;
            return;
        }
        Ok(Some(Ok(other))) => {
            inc(&inner.counters.protocol_errors);
            let f = refuse("protocol", format!("expected Hello, got {}", other.name()));
            let _ = write_frame(&mut wr, &f).await;
            return;
        }
        _ => {
            inc(&inner.counters.refused);
            return;
        }
    };
    if cn.as_deref() != Some(hello.serial.as_str()) {
        let f = refuse(
            "cert-mismatch",
            format!(
                "certificate CN {:?} does not match serial {:?}",
                cn.unwrap_or_default(),
                hello.serial
            ),
        );
        let _ = write_frame(&mut wr, &f).await;
        return;
    }
    let sink = inner.sink.clone();
    let h2 = hello.clone();
    let Some((mut status, mut last_seq)) = blocking(move || sink.hello(&h2, peer)).await else {
        return;
    };
    let reply = |status: RegStatus, last: u64| {
        Frame::HelloReply(HelloReply {
            status,
            server_serial: inner.server.serial.clone(),
            server_hostname: inner.server.hostname.clone(),
            server_version: inner.server.version.clone(),
            last_acked_seq: last,
        })
    };
    // The session is listed before the reply goes out, so a device that sees its reply also
    // finds itself in `sessions()`.
    let serial = hello.serial.clone();
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    {
        let info = SessionInfo {
            serial: serial.clone(),
            hostname: hello.hostname.clone(),
            peer,
            status,
            connected_since_ns: inner.clock.now_ns(),
            last_seq,
        };
        let old = inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                serial.clone(),
                Entry {
                    conn,
                    tx: ctl_tx,
                    info,
                },
            );
        if let Some(old) = old {
            let _ = old.tx.send(Ctl::Close(
                "replaced by a new connection from the same device",
            ));
        }
    }
    inc(&inner.counters.active);
    tracing::info!(%serial, %peer, ?status, last_seq, "log channel session opened");
    let pending: Vec<Notification> = inner
        .pending
        .lock()
        .unwrap()
        .get(&serial)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let mut result: Result<(), String> = write_frame(&mut wr, &reply(status, last_seq))
        .await
        .map_err(|e| e.to_string());
    for n in pending {
        if result.is_err() {
            break;
        }
        if let Err(e) = write_frame(&mut wr, &Frame::Notify(n)).await {
            result = Err(e.to_string());
            break;
        }
        inc(&inner.counters.notifications_sent);
    }
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    while result.is_ok() {
        let ping_at = last_tx + PING_INTERVAL;
        let dead_at = last_rx + DEAD_AFTER;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ctl = ctl_rx.recv() => match ctl {
                None => break,
                Some(Ctl::Close(why)) => {
                    let _ = write_frame(&mut wr, &Frame::error("closed", why)).await;
                    break;
                }
                Some(Ctl::Notify(n)) => {
                    result = write_frame(&mut wr, &Frame::Notify(n)).await.map_err(|e| e.to_string());
                    inc(&inner.counters.notifications_sent);
                    last_tx = Instant::now();
                }
                Some(Ctl::Authorize) => {
                    let sink = inner.sink.clone();
                    let h2 = hello.clone();
                    let Some((_, last)) = blocking(move || sink.hello(&h2, peer)).await else { break };
                    status = RegStatus::Registered;
                    last_seq = last;
                    update_info(&inner, &serial, conn, status, last_seq);
                    tracing::info!(%serial, last_seq, "log channel device authorized");
                    result = write_frame(&mut wr, &reply(status, last_seq)).await.map_err(|e| e.to_string());
                    last_tx = Instant::now();
                }
            },
            f = frx.recv() => {
                last_rx = Instant::now();
                let frame = match f {
                    None => break,
                    Some(Err(ReadError::Io(e))) => {
                        tracing::debug!(%serial, error = %e, "log channel read failed");
                        break;
                    }
                    Some(Err(ReadError::Frame(e))) => {
                        count_frame_error(&inner, &e);
                        tracing::warn!(%serial, error = %e, "bad log channel frame");
                        let _ = write_frame(&mut wr, &Frame::error(e.code(), e.to_string())).await;
                        break;
                    }
                    Some(Ok(f)) => f,
                };
                match frame {
                    Frame::Batch { first_seq, lines } => {
                        if status != RegStatus::Registered {
                            inc(&inner.counters.unauthorized_batches);
                            continue;
                        }
                        if lines.is_empty() {
                            continue;
                        }
                        inc(&inner.counters.batches);
                        inner.counters.lines.fetch_add(lines.len() as u64, Ordering::Relaxed);
                        let sink = inner.sink.clone();
                        let s2 = serial.clone();
                        let stored = blocking(move || sink.store(&s2, first_seq, lines)).await;
                        match stored {
                            Some(Ok(last)) => {
                                last_seq = last;
                                update_info(&inner, &serial, conn, status, last_seq);
                                result = write_frame(&mut wr, &Frame::Ack(last)).await.map_err(|e| e.to_string());
                                last_tx = Instant::now();
                            }
                            Some(Err(e)) => {
                                inc(&inner.counters.store_errors);
                                tracing::warn!(%serial, error = %e, "storing logs failed");
                                let _ = write_frame(&mut wr, &Frame::error("store", e)).await;
                                break;
                            }
                            None => break,
                        }
                    }
                    Frame::NotifyAck(id) => {
                        let removed = inner
                            .pending
                            .lock()
                            .unwrap()
                            .get_mut(&serial)
                            .and_then(|m| m.remove(&id))
                            .is_some();
                        if removed {
                            inc(&inner.counters.notifications_acked);
                            let sink = inner.sink.clone();
                            let s2 = serial.clone();
                            blocking(move || sink.notify_acked(&s2, id)).await;
                        }
                    }
                    Frame::Ping => {
                        result = write_frame(&mut wr, &Frame::Pong).await.map_err(|e| e.to_string());
                        last_tx = Instant::now();
                    }
                    Frame::Pong => {}
                    Frame::Error(e) => {
                        tracing::info!(%serial, code = %e.code, message = %e.message, "device closed the log channel");
                        break;
                    }
                    other => {
                        inc(&inner.counters.protocol_errors);
                        let msg = format!("unexpected {} frame from a device", other.name());
                        let _ = write_frame(&mut wr, &Frame::error("protocol", msg)).await;
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(ping_at.min(dead_at)) => {
                let now = Instant::now();
                if now >= dead_at {
                    tracing::warn!(%serial, "log channel peer silent for {DEAD_AFTER:?}, closing");
                    break;
                }
                result = write_frame(&mut wr, &Frame::Ping).await.map_err(|e| e.to_string());
                last_tx = now;
            }
        }
    }
    if let Err(e) = result {
        tracing::debug!(%serial, error = %e, "log channel write failed");
    }
    {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_millis(200), wr.shutdown()).await;
    }
    inner.counters.active.fetch_sub(1, Ordering::Relaxed);
    let removed = {
        let mut s = inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if s.get(&serial).is_some_and(|e| e.conn == conn) {
            s.remove(&serial);
            true
        } else {
            false
        }
    };
    if removed {
        tracing::info!(%serial, "log channel session closed");
        let sink = inner.sink.clone();
        blocking(move || sink.disconnected(&serial)).await;
    }
}

fn update_info(inner: &Inner, serial: &str, conn: u64, status: RegStatus, last_seq: u64) {
    if let Some(e) = inner
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(serial)
    {
        if e.conn == conn {
            e.info.status = status;
            e.info.last_seq = last_seq;
        }
    }
}
