//! The device side of the log channel.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::frame::{self, BatchEncoder, Frame, FrameCodec, ReadError};
use super::spill::{DiskReader, Queue, Source};
use super::{
    clamp_line, Notification, RegStatus, SenderConfig, SenderStats, UploadOption, ALPN, DEAD_AFTER,
    HANDSHAKE_TIMEOUT, MAX_BATCH_BYTES, MAX_BATCH_LINES, MAX_RECONNECT_DELAY, PING_INTERVAL,
    WINDOW,
};
use crate::supervise::Supervisor;

type Tls = TlsStream<TcpStream>;

#[derive(Default)]
struct Conn {
    connected: bool,
    registration: Option<RegStatus>,
    sent_lines: u64,
    reconnects: u64,
    last_error: Option<String>,
    server_serial: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// New lines queued, or the upload limit raised.
    data: Notify,
    /// The server address changed: reconnect.
    reconfig: Notify,
    target: Mutex<(SocketAddr, String)>,
    /// Lines with idx below this may be uploaded (`u64::MAX` in real time).
    limit: AtomicU64,
    acked: watch::Sender<u64>,
    conn: Mutex<Conn>,
    stopped: watch::Sender<bool>,
    /// Bumped whenever what [`LogSender::changed`] waits for changes: connected,
    /// registration, the queue's spill failing or recovering.
    state: watch::Sender<u64>,
}

impl Shared {
    fn ack(&self, idx: u64) {
        let acked = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.ack(idx);
            q.acked
        };
        self.acked.send_replace(acked);
    }

    /// Wakes the watchers of [`LogSender::changed`].
    fn state_changed(&self) {
        self.state.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn error(&self, msg: String) {
        tracing::debug!(error = %msg, "log channel");
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some(msg);
    }
}

/// The sending side of the log channel (FortiGate, FortiClient). Cheap to clone.
#[derive(Clone)]
pub struct LogSender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSender").finish_non_exhaustive()
    }
}

impl LogSender {
    /// Starts the background connection task. Returns the handle and the stream of
    /// notifications received from the server ([`LogSender::start_with`], with a queue of
    /// [`super::NOTIFY_QUEUE`]). Must be called inside a tokio runtime.
    pub fn start(
        cfg: SenderConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<(LogSender, mpsc::Receiver<Notification>)> {
        let (ntx, nrx) = mpsc::channel(super::NOTIFY_QUEUE);
        Ok((Self::start_with(cfg, ntx, shutdown)?, nrx))
    }

    /// Starts the background connection task; notifications from the server go to `ntx`, each
    /// id once. A notification is acknowledged (`NotifyAck`) only once it is in `ntx`; while
    /// `ntx` is full the sender waits (and reads nothing more from the server), so a burst is
    /// slowed down, never dropped. A duplicate (an id already handed over) is acknowledged
    /// again and not passed on. Must be called inside a tokio runtime.
    pub fn start_with(
        cfg: SenderConfig,
        ntx: mpsc::Sender<Notification>,
        shutdown: CancellationToken,
    ) -> std::io::Result<LogSender> {
        Self::start_full(cfg, None, ntx, &Supervisor::default(), shutdown)
    }

    /// [`LogSender::start_with`], connecting from the network namespace `netns` (namespaces
    /// mode: an endpoint's own, see [`crate::netns`]).
    pub fn start_in(
        cfg: SenderConfig,
        netns: Option<Arc<crate::netns::NetNs>>,
        ntx: mpsc::Sender<Notification>,
        shutdown: CancellationToken,
    ) -> std::io::Result<LogSender> {
        Self::start_full(cfg, netns, ntx, &Supervisor::default(), shutdown)
    }

    /// [`LogSender::start_with`] with its tasks ([`CONNECTION_TASK`], [`UPLOAD_TIMER_TASK`])
    /// under `sup`: a task that panics is reported there and started again; the queue, the
    /// connection figures and the notification ids already handed over live in shared state,
    /// so the restarted connection task resends from the last acknowledged line and passes no
    /// notification on twice.
    pub fn start_supervised(
        cfg: SenderConfig,
        ntx: mpsc::Sender<Notification>,
        sup: &Supervisor,
        shutdown: CancellationToken,
    ) -> std::io::Result<LogSender> {
        Self::start_full(cfg, None, ntx, sup, shutdown)
    }

    /// [`LogSender::start_supervised`] from the network namespace `netns`.
    pub fn start_full(
        cfg: SenderConfig,
        netns: Option<Arc<crate::netns::NetNs>>,
        ntx: mpsc::Sender<Notification>,
        sup: &Supervisor,
        shutdown: CancellationToken,
    ) -> std::io::Result<LogSender> {
        ServerName::try_from(cfg.server_name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let queue = Queue::open(&cfg.queue_dir, cfg.mem_limit)?;
        let acked = queue.acked;
        let limit = match cfg.upload {
            UploadOption::Realtime => u64::MAX,
            UploadOption::Interval(_) => 1,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            data: Notify::new(),
            reconfig: Notify::new(),
            target: Mutex::new((cfg.server, cfg.server_name.clone())),
            limit: AtomicU64::new(limit),
            acked: watch::channel(acked).0,
            conn: Mutex::new(Conn::default()),
            stopped: watch::channel(false).0,
            state: watch::channel(0).0,
        });
        let mut tls = (*cfg.tls).clone();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        if let UploadOption::Interval(every) = cfg.upload {
            let s = shared.clone();
            let stop = shutdown.clone();
            let real = cfg.clock.to_real(every).max(Duration::from_millis(1));
            sup.spawn(UPLOAD_TIMER_TASK, shutdown.clone(), move || {
                let (s, stop) = (s.clone(), stop.clone());
                async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(real) => {
                                let next = s.queue.lock().unwrap_or_else(|p| p.into_inner()).next_idx;
                                s.limit.store(next, Ordering::SeqCst);
                                s.data.notify_one();
                            }
                        }
                    }
                }
            });
        }
        let seen = Arc::new(tokio::sync::Mutex::new(Seen::default()));
        let s = shared.clone();
        let stop = shutdown.clone();
        sup.spawn(CONNECTION_TASK, shutdown, move || {
            run(
                s.clone(),
                cfg.clone(),
                connector.clone(),
                netns.clone(),
                ntx.clone(),
                seen.clone(),
                stop.clone(),
            )
        });
        Ok(LogSender { shared })
    }

    /// Enqueues one log line (never blocks on the network; assigns the next sequence number,
    /// which it returns). Lines longer than [`super::MAX_LINE`] bytes are truncated. Returns 0
    /// when the line is dropped: the memory queue is full and cannot spill to disk (disk full);
    /// `stats()` then reports `dropped` and `queue_error` (naming the file).
    pub fn send(&self, line: String) -> u64 {
        let (seq, failing_changed) = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let failing = q.spill_failing();
            let seq = q.push(clamp_line(line)).map(|idx| idx + q.offset);
            (seq, failing != q.spill_failing())
        };
        if failing_changed {
            self.shared.state_changed();
        }
        let Some(seq) = seq else { return 0 };
        self.shared.data.notify_one();
        seq
    }

    /// A receiver that sees a change whenever the connection goes up or down, the
    /// registration changes, or the queue starts or stops failing to spill (what a device
    /// reports from [`LogSender::stats`]): watchers wait on it instead of polling.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.shared.state.subscribe()
    }

    pub fn stats(&self) -> SenderStats {
        let (next_seq, acked_seq, queued, in_memory, spilled, qerr, dropped, failing) = {
            let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            (
                q.next_idx + q.offset,
                q.acked + q.offset,
                q.queued(),
                q.in_memory(),
                q.spilled(),
                q.last_error.clone(),
                q.dropped,
                q.spill_failing(),
            )
        };
        let c = self.shared.conn.lock().unwrap_or_else(|p| p.into_inner());
        SenderStats {
            connected: c.connected,
            registration: c.registration,
            next_seq,
            acked_seq,
            queued,
            in_memory,
            spilled,
            sent_lines: c.sent_lines,
            reconnects: c.reconnects,
            queue_error: if failing { qerr.clone() } else { None },
            last_error: c.last_error.clone().or(qerr),
            server_serial: c.server_serial.clone(),
            dropped,
        }
    }

    /// Waits until every line enqueued so far is acknowledged, or the timeout passes.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_idx
            - 1;
        let mut rx = self.shared.acked.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Uploads everything queued now, without waiting for the upload interval.
    pub fn upload_now(&self) {
        let next = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_idx;
        self.shared.limit.fetch_max(next, Ordering::SeqCst);
        self.shared.data.notify_one();
    }

    /// Writes a copy of the queue (unacknowledged lines and numbering) into the new directory
    /// `dst`, under the queue's lock: a lab snapshot taken while the sender runs on.
    pub fn snapshot_to(&self, dst: &std::path::Path) -> std::io::Result<()> {
        self.shared.queue.lock().unwrap().snapshot_to(dst)
    }

    /// Points the sender at another server (the FortiAnalyzer address changed): the current
    /// connection is closed and the queue is resent to the new one.
    pub fn set_server(&self, server: SocketAddr, server_name: String) {
        *self.shared.target.lock().unwrap_or_else(|p| p.into_inner()) = (server, server_name);
        self.shared.reconfig.notify_one();
    }

    /// Resolves once the background task has stopped (after shutdown) and the queue is saved.
    pub async fn stopped(&self) {
        let mut rx = self.shared.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

enum End {
    Shutdown,
    Reconfig,
    /// The connection was lost; `bool`: the hello exchange had succeeded.
    Lost(String, bool),
}

/// Remembers recently seen notification ids.
#[derive(Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }

    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > 10_000 {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The supervised task that connects, uploads and receives notifications.
pub const CONNECTION_TASK: &str = "log channel: sender";
/// The supervised task that raises the upload limit every upload interval (not real time).
pub const UPLOAD_TIMER_TASK: &str = "log channel: upload timer";

async fn run(
    shared: Arc<Shared>,
    cfg: SenderConfig,
    connector: tokio_rustls::TlsConnector,
    netns: Option<Arc<crate::netns::NetNs>>,
    ntx: mpsc::Sender<Notification>,
    seen: Arc<tokio::sync::Mutex<Seen>>,
    shutdown: CancellationToken,
) {
    // Held for the instance's life; a panic releases it and the next instance goes on.
    let mut seen = seen.lock().await;
    let seen = &mut *seen;
    let base = cfg.reconnect_delay.max(Duration::from_millis(1));
    let cap = MAX_RECONNECT_DELAY.max(base);
    let mut delay = base;
    let mut reader = Some(DiskReader::default());
    while !shutdown.is_cancelled() {
        let (addr, name) = shared
            .target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let end = match connect(&connector, netns.as_deref(), addr, &name).await {
            Ok(tls) => session(&shared, &cfg, tls, &shutdown, &mut reader, seen, &ntx).await,
            Err(e) => End::Lost(format!("connect {addr}: {e}"), false),
        };
        {
            let mut c = shared.conn.lock().unwrap_or_else(|p| p.into_inner());
            c.connected = false;
        }
        shared.state_changed();
        match end {
            End::Shutdown => break,
            End::Reconfig => {
                delay = base;
                continue;
            }
            End::Lost(msg, had_hello) => {
                shared.error(msg);
                shared
                    .conn
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reconnects += 1;
                if had_hello {
                    delay = base;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.reconfig.notified() => { delay = base; continue; }
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(cap);
    }
    let res = shared
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .close();
    if let Err(e) = res {
        tracing::warn!(error = %e, "saving the log queue failed");
    }
    shared.stopped.send_replace(true);
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    netns: Option<&crate::netns::NetNs>,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<Tls> {
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, crate::netns::connect(netns, addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let sn = ServerName::try_from(name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(sn, tcp))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(std::io::Error::other(
            "the server did not negotiate the log channel ALPN",
        ));
    }
    Ok(tls)
}

/// Writes and flushes, giving up when the peer stops reading for [`DEAD_AFTER`].
pub(super) async fn write<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(DEAD_AFTER, async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write stalled"))?
}

pub(super) async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    f: &Frame,
) -> std::io::Result<()> {
    write(wr, &frame::to_bytes(f)).await
}

/// Reads frames into a channel until EOF, an error, or the channel closes.
pub(super) async fn read_loop<R>(rd: R, tx: mpsc::Sender<Result<Frame, ReadError>>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut frames = FramedRead::with_capacity(rd, FrameCodec, 64 * 1024);
    while let Some(item) = frames.next().await {
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            break;
        }
    }
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Builds the next batch from `cursor`: (frame bytes, first idx, last idx).
async fn next_batch(
    shared: &Arc<Shared>,
    cursor: u64,
    limit: u64,
    reader: &mut Option<DiskReader>,
) -> std::io::Result<Option<(BytesMut, u64, u64)>> {
    let (c, first, end, path, offset) = {
        let q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        match q.source(cursor, limit) {
            Source::Nothing => return Ok(None),
            Source::Memory { cursor } => {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                return Ok(q
                    .encode_memory(cursor, limit, MAX_BATCH_LINES, MAX_BATCH_BYTES, &mut buf)
                    .map(|(f, l)| (buf, f, l)));
            }
            Source::Disk {
                cursor,
                first,
                end,
                path,
            } => (cursor, first, end, path, q.offset),
        }
    };
    let mut r = reader.take().unwrap_or_default();
    let (r, res) = tokio::task::spawn_blocking(move || {
        let res = r.read(&path, first, c, end, MAX_BATCH_LINES, MAX_BATCH_BYTES);
        (r, res)
    })
    .await
    .map_err(std::io::Error::other)?;
    *reader = Some(r);
    let (records, n) = res?;
    if n == 0 {
        return Ok(None);
    }
    let mut buf = BytesMut::with_capacity(records.len() + 32);
    let mut b = BatchEncoder::new(&mut buf, c + offset);
    b.push_records(&records, n);
    b.finish();
    Ok(Some((buf, c, c + n as u64 - 1)))
}

/// Applies a `HelloReply`; returns whether the device may send and the resend cursor.
fn apply_reply(shared: &Shared, r: &super::HelloReply) -> (bool, u64) {
    {
        let mut c = shared.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.registration = Some(r.status);
        c.server_serial = Some(r.server_serial.clone());
    }
    shared.state_changed();
    if r.status != RegStatus::Registered {
        let q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        return (false, q.acked + 1);
    }
    let acked = {
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.fresh || r.last_acked_seq >= q.next_idx + q.offset {
            // The server remembers sequence numbers this queue never issued (its state was
            // lost): number the queue above them rather than have it dropped as duplicates.
            q.renumber_above(r.last_acked_seq);
        }
        if q.fresh {
            q.fresh = false;
            q.save();
        }
        let idx = r.last_acked_seq.saturating_sub(q.offset);
        q.ack(idx);
        q.acked
    };
    shared.acked.send_replace(acked);
    (true, acked + 1)
}

async fn session(
    shared: &Arc<Shared>,
    cfg: &SenderConfig,
    tls: Tls,
    shutdown: &CancellationToken,
    reader: &mut Option<DiskReader>,
    seen: &mut Seen,
    ntx: &mpsc::Sender<Notification>,
) -> End {
    let (rd, mut wr): (ReadHalf<Tls>, WriteHalf<Tls>) = tokio::io::split(tls);
    let (ftx, mut frx) = mpsc::channel(16);
    let _reader_task = AbortOnDrop(tokio::spawn(read_loop(rd, ftx)));
    if let Err(e) = write_frame(&mut wr, &Frame::Hello(cfg.hello.clone())).await {
        return End::Lost(format!("sending hello: {e}"), false);
    }
    let reply = match tokio::time::timeout(HANDSHAKE_TIMEOUT, frx.recv()).await {
        Err(_) => return End::Lost("no hello reply".into(), false),
        Ok(None) => return End::Lost("connection closed before the hello reply".into(), false),
        Ok(Some(Err(e))) => return End::Lost(format!("reading hello reply: {e}"), false),
        Ok(Some(Ok(Frame::HelloReply(r)))) => r,
        Ok(Some(Ok(Frame::Error(e)))) => {
            return End::Lost(
                format!("refused by the server: {}: {}", e.code, e.message),
                false,
            )
        }
        Ok(Some(Ok(other))) => {
            let _ = write_frame(&mut wr, &Frame::error("protocol", "expected HelloReply")).await;
            return End::Lost(format!("expected HelloReply, got {}", other.name()), false);
        }
    };
    // On the blocking pool: a fresh queue's first reply writes and fsyncs its state, which
    // must not hold a runtime worker (a process of 1,000 endpoints connects them at once).
    let (sh, r2) = (shared.clone(), reply.clone());
    let (mut registered, mut cursor) =
        match tokio::task::spawn_blocking(move || apply_reply(&sh, &r2)).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return End::Shutdown,
        };
    if let Some(r) = reader.as_mut() {
        r.reset();
    }
    shared
        .conn
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .connected = true;
    shared.state_changed();
    tracing::info!(server = %reply.server_serial, status = ?reply.status, last_acked = reply.last_acked_seq,
        "log channel connected");
    let mut inflight: VecDeque<u64> = VecDeque::new();
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let mut last_batch: Option<Instant> = None;
    loop {
        // A few lines written right behind the last batch wait for more (see COALESCE); a
        // backlog goes at once.
        let hold = last_batch
            .map(|t| t + super::COALESCE)
            .filter(|at| Instant::now() < *at)
            .filter(|_| {
                let waiting = shared
                    .queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next_idx
                    .saturating_sub(cursor);
                (1..super::COALESCE_LINES).contains(&waiting)
            });
        if registered && hold.is_none() {
            let mut wrote = false;
            while inflight.len() < WINDOW {
                let limit = shared.limit.load(Ordering::SeqCst);
                let batch = match next_batch(shared, cursor, limit, reader).await {
                    Ok(b) => b,
                    Err(e) => {
                        shared.error(format!("reading the spilled queue: {e}"));
                        if let Some(r) = reader.as_mut() {
                            r.reset();
                        }
                        None
                    }
                };
                let Some((bytes, first, last)) = batch else {
                    break;
                };
                if let Err(e) = tokio::time::timeout(DEAD_AFTER, wr.write_all(&bytes))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "write stalled",
                        ))
                    })
                {
                    return End::Lost(format!("sending a batch: {e}"), true);
                }
                shared
                    .conn
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sent_lines += last - first + 1;
                inflight.push_back(last);
                cursor = last + 1;
                wrote = true;
            }
            if wrote {
                if let Err(e) = write(&mut wr, &[]).await {
                    return End::Lost(format!("sending a batch: {e}"), true);
                }
                last_tx = Instant::now();
                last_batch = Some(last_tx);
            }
        }
        let ping_at = last_tx + PING_INTERVAL;
        let dead_at = last_rx + DEAD_AFTER;
        let can_send = registered && inflight.len() < WINDOW && hold.is_none();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(200), wr.shutdown()).await;
                return End::Shutdown;
            }
            _ = shared.reconfig.notified() => return End::Reconfig,
            f = frx.recv() => {
                last_rx = Instant::now();
                let frame = match f {
                    None => return End::Lost("connection closed by the server".into(), true),
                    Some(Err(ReadError::Io(e))) => return End::Lost(format!("reading: {e}"), true),
                    Some(Err(ReadError::Frame(e))) => {
                        let _ = write_frame(&mut wr, &Frame::error(e.code(), e.to_string())).await;
                        return End::Lost(format!("bad frame from the server: {e}"), true);
                    }
                    Some(Ok(f)) => f,
                };
                let res = match frame {
                    Frame::Ack(seq) => {
                        let offset = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).offset;
                        let idx = seq.saturating_sub(offset);
                        shared.ack(idx);
                        while inflight.front().is_some_and(|l| *l <= idx) {
                            inflight.pop_front();
                        }
                        cursor = cursor.max(idx + 1);
                        Ok(())
                    }
                    Frame::Notify(n) => {
                        let id = n.id;
                        if !seen.contains(id) {
                            // Queued before acknowledged: a full queue holds the session here
                            // (back-pressure), it never drops.
                            tokio::select! {
                                _ = shutdown.cancelled() => return End::Shutdown,
                                r = ntx.send(n) => if r.is_err() {
                                    return End::Lost("the notification consumer is gone".into(), true);
                                },
                            }
                            seen.insert(id);
                        }
                        write_frame(&mut wr, &Frame::NotifyAck(id)).await
                    }
                    Frame::HelloReply(r) => {
                        (registered, cursor) = apply_reply(shared, &r);
                        inflight.clear();
                        tracing::info!(status = ?r.status, last_acked = r.last_acked_seq, "log channel registration changed");
                        Ok(())
                    }
                    Frame::Ping => write_frame(&mut wr, &Frame::Pong).await,
                    Frame::Pong => Ok(()),
                    Frame::Error(e) => {
                        return End::Lost(format!("server error: {}: {}", e.code, e.message), true)
                    }
                    other => {
                        let msg = format!("unexpected {} frame from the server", other.name());
                        let _ = write_frame(&mut wr, &Frame::error("protocol", msg.clone())).await;
                        return End::Lost(msg, true);
                    }
                };
                if let Err(e) = res {
                    return End::Lost(format!("writing: {e}"), true);
                }
            }
            _ = shared.data.notified(), if can_send => {}
            _ = tokio::time::sleep_until(hold.unwrap_or(dead_at)), if hold.is_some() => {}
            _ = tokio::time::sleep_until(ping_at.min(dead_at)) => {
                let now = Instant::now();
                if now >= dead_at {
                    return End::Lost(format!("nothing heard from the server for {DEAD_AFTER:?}"), true);
                }
                if let Err(e) = write_frame(&mut wr, &Frame::Ping).await {
                    return End::Lost(format!("sending ping: {e}"), true);
                }
                last_tx = now;
            }
        }
    }
}
