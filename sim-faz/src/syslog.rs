//! Plain syslog input (UDP and TCP on the same port number) for devices that only speak syslog.
//!
//! Framing: UDP datagrams (one message each; several newline-separated messages are split);
//! TCP with octet counting (RFC 6587 `LEN SP MSG`) or newline/NUL-terminated messages, chosen
//! per message by its first byte. Headers: FortiOS `format default` (`<PRI>` then the key=value
//! body), RFC 3164 (`<PRI>Mmm dd hh:mm:ss host tag: body`) and RFC 5424
//! (`<PRI>1 TS HOST APP PROCID MSGID SD body`). Messages are attributed to a device by the
//! sender's address, as FortiAnalyzer does ([`Faz::syslog_sender`]), never by the `devid` a
//! line claims.
//!
//! Flow control: TCP readers hand batches to a bounded queue and wait while it is full, so a
//! fast sender is slowed by TCP flow control and nothing is lost; UDP has none, so a datagram
//! that finds the queue full is dropped and counted, and so are the kernel's own drops (the
//! socket's `drops` in /proc/net/udp).
//!
//! Durability: syslog has no acknowledgement, so its lines are committed as
//! [`Durability::Unacknowledged`](crate::store::Durability): in groups (the ingest keeps up to
//! [`IN_FLIGHT`] batches waiting for their commit, so the store's writer commits several at
//! once) and without waiting for an fsync of their own; the WAL is fsynced within the store's
//! `sync_window` (1 s by default). A committed line survives a crash of the process; a power
//! loss or kernel crash loses at most the last second's syslog. Lines from the log channel are
//! acknowledged and keep their fsync before the acknowledgement.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::faz::Faz;
use fortilab_core::EventKind;

/// Longest accepted message.
pub const MAX_MSG: usize = 64 * 1024;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The FortiOS body of a syslog message (header removed), or `None` for an empty message.
pub fn body_of(msg: &str) -> Option<&str> {
    let msg = msg.trim_matches(|c: char| c == '\n' || c == '\r' || c == '\0' || c == ' ');
    let mut rest = msg;
    if let Some(r) = rest.strip_prefix('<') {
        if let Some(end) = r.find('>') {
            if end <= 3 && r[..end].bytes().all(|b| b.is_ascii_digit()) && end > 0 {
                rest = &r[end + 1..];
            }
        }
    }
    // RFC 5424: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
    if let Some(after) = rest.strip_prefix("1 ") {
        let mut r = after;
        for _ in 0..5 {
            r = match r.find(' ') {
                Some(i) => &r[i + 1..],
                None => return None,
            };
        }
        // Structured data: "-" or one or more [...] elements.
        if let Some(x) = r.strip_prefix('-') {
            r = x;
        } else {
            while r.starts_with('[') {
                let b = r.as_bytes();
                let mut i = 1;
                let mut in_q = false;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 1,
                        b'"' => in_q = !in_q,
                        b']' if !in_q => break,
                        _ => {}
                    }
                    i += 1;
                }
                r = if i < b.len() { &r[i + 1..] } else { "" };
            }
        }
        let r = r.trim_start_matches(' ').trim_start_matches('\u{feff}');
        return (!r.is_empty()).then_some(r);
    }
    // RFC 3164: Mmm dd hh:mm:ss HOST TAG: MSG
    // The timestamp is 15 ASCII characters and a space; `get` keeps a multi-byte character
    // around byte 16 from splitting (such a line is not RFC 3164 and is kept whole).
    let stamp = rest.get(16..).filter(|_| {
        MONTHS.iter().any(|m| rest.starts_with(m))
            && rest.as_bytes()[3] == b' '
            && rest.as_bytes()[..16].is_ascii()
    });
    if let Some(after) = stamp.filter(|a| !a.is_empty()) {
        let mut r = after.trim_start();
        // HOST
        if let Some(i) = r.find(' ') {
            let host = &r[..i];
            if !host.contains('=') {
                r = &r[i + 1..];
            }
        }
        // TAG: (no '=' in it)
        if let Some(i) = r.find(' ') {
            let tag = &r[..i];
            if tag.ends_with(':') && !tag.contains('=') {
                r = &r[i + 1..];
            }
        }
        let r = r.trim_start();
        return (!r.is_empty()).then_some(r);
    }
    let r = rest.trim_start();
    (!r.is_empty()).then_some(r)
}

/// The lines of one sender, bodies without their syslog headers, each ended by LF (the form
/// they take in the raw log file).
#[derive(Debug)]
struct Chunk {
    peer: std::net::IpAddr,
    text: Vec<u8>,
    lines: u64,
}

/// Messages handed from a listener to the ingest thread in one go, by sender.
#[derive(Debug, Default)]
struct Batch {
    chunks: Vec<Chunk>,
    lines: usize,
}

impl Batch {
    fn new() -> Self {
        Self::default()
    }

    /// Lines in the batch.
    fn len(&self) -> usize {
        self.lines
    }

    fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Adds one body from `peer` (no LF in it).
    fn push(&mut self, peer: std::net::IpAddr, body: &str) {
        let chunk = match self.chunks.last_mut() {
            Some(c) if c.peer == peer => c,
            _ => {
                self.chunks.push(Chunk {
                    peer,
                    text: Vec::with_capacity(64 * 1024),
                    lines: 0,
                });
                self.chunks.last_mut().expect("just pushed")
            }
        };
        chunk.text.extend_from_slice(body.as_bytes());
        chunk.text.push(b'\n');
        chunk.lines += 1;
        self.lines += 1;
    }
}

/// Batches queued for the ingest thread. TCP readers wait while it is full (the sender is
/// slowed down by TCP flow control, nothing is dropped); a UDP datagram that finds it full is
/// dropped and counted (`syslog_dropped`), as are the datagrams the kernel drops when the
/// socket's buffer overflows (`syslog_udp_kernel_drops`).
pub const QUEUE_BATCHES: usize = 256;
/// Messages per batch at most (a TCP reader sends what its buffer holds, up to this).
pub const BATCH_MSGS: usize = 2048;

/// Settings of the syslog input.
#[derive(Debug, Clone, Copy)]
pub struct SyslogOptions {
    /// A TCP sender that starts a message and does not finish it within this is
    /// disconnected (an idle connection between messages stays open).
    pub partial_timeout: std::time::Duration,
    /// Batches queued for the ingest thread ([`QUEUE_BATCHES`]).
    pub queue_batches: usize,
    /// Longest time a line appended to a raw log file waits for its fsync
    /// ([`crate::store::DEFAULT_SYNC_WINDOW`]).
    pub sync_window: std::time::Duration,
}

impl SyslogOptions {
    pub fn new(partial_timeout: std::time::Duration) -> Self {
        Self {
            partial_timeout,
            queue_batches: QUEUE_BATCHES,
            sync_window: crate::store::DEFAULT_SYNC_WINDOW,
        }
    }
}

/// Starts UDP and TCP listeners; bodies go to a blocking ingest thread. A TCP sender that
/// starts a message and does not finish it within `partial_timeout` is disconnected (an idle
/// connection between messages stays open, as reliable senders keep theirs).
pub fn start(
    faz: Arc<Faz>,
    udp: UdpSocket,
    tcp: TcpListener,
    partial_timeout: std::time::Duration,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    start_with(faz, udp, tcp, SyslogOptions::new(partial_timeout), shutdown)
}

/// [`start`] with all the settings.
pub fn start_with(
    faz: Arc<Faz>,
    udp: UdpSocket,
    tcp: TcpListener,
    opts: SyslogOptions,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let partial_timeout = opts.partial_timeout;
    let (tx, rx) = mpsc::channel::<Batch>(opts.queue_batches.max(1));
    // Supervised: a reader that panics is reported and restarted on the same socket.
    let sup = faz.supervisor.clone();
    {
        let faz = faz.clone();
        let tx = tx.clone();
        let stop = shutdown.clone();
        let r = sup.spawn_udp("syslog udp", udp, shutdown.clone(), move |udp| {
            udp_loop(faz.clone(), udp, tx.clone(), stop.clone())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "syslog UDP not started");
        }
    }
    {
        let faz = faz.clone();
        let stop = shutdown.clone();
        let r = sup.spawn_tcp("syslog tcp", tcp, shutdown.clone(), move |tcp| {
            tcp_loop(faz.clone(), tcp, tx.clone(), partial_timeout, stop.clone())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "syslog TCP not started");
        }
    }
    // The indexer: raw log files into the SQL store, behind the appender. The lines stored
    // before a restart and not indexed yet count in the insert lag from the start.
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
    {
        let (faz, stop) = (faz.clone(), shutdown.clone());
        let cursors = load_cursors(&faz);
        let reader = crate::rawlog::RawReader::new(&faz.raw_log_dir());
        for dev in reader.devices() {
            let cur = cursors.get(&dev).map(|c| c.next).unwrap_or_default();
            let backlog = reader.backlog(&dev, cur);
            if backlog > 0 {
                tracing::info!(
                    dev,
                    backlog,
                    "raw log: indexing the lines stored before the restart"
                );
                faz.rawlog.appended(0, backlog);
            }
        }
        if let Err(e) = std::thread::Builder::new()
            .name("faz-syslog-index".into())
            .spawn(move || index_loop(faz, reader, cursors, wake_rx, stop))
        {
            tracing::error!(error = %e, "syslog indexer not started");
        }
    }
    let window = opts.sync_window;
    std::thread::Builder::new()
        .name("faz-syslog-ingest".into())
        .spawn(move || append_loop(faz, rx, wake_tx, window))
        .expect("spawn syslog thread")
}

/// Splits one syslog message (a datagram, or one TCP frame) into bodies.
fn accept_body(faz: &Faz, raw: &[u8], peer: SocketAddr, out: &mut Batch) {
    faz.counters.syslog_messages.fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(raw);
    for m in text.split('\n') {
        if m.trim().is_empty() {
            continue;
        }
        match body_of(m) {
            Some(b) => out.push(peer.ip(), b),
            None => {
                faz.counters.syslog_bad.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The socket's inode (`/proc/self/fd/N` → `socket:[inode]`), to find it in /proc/net/udp.
fn socket_inode(udp: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", udp.as_raw_fd())).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Datagrams the kernel dropped for the UDP socket with this inode (the `drops` column of
/// /proc/net/udp and /proc/net/udp6): receive buffer overflows before we could read them.
pub fn kernel_udp_drops(inode: u64) -> Option<u64> {
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        if let Some(d) = drops_in_table(&text, inode) {
            return Some(d);
        }
    }
    None
}

/// The `drops` column of the row whose inode is `inode` in a /proc/net/udp{,6} table.
fn drops_in_table(text: &str, inode: u64) -> Option<u64> {
    let header: Vec<&str> = text.lines().next()?.split_whitespace().collect();
    // The header names "tx_queue rx_queue" and "tr tm->when" as pairs of one column each.
    let col = |name: &str| -> Option<usize> {
        let mut i = 0usize;
        for h in &header {
            if *h == name {
                return Some(i);
            }
            if !matches!(*h, "rx_queue" | "tm->when") {
                i += 1;
            }
        }
        None
    };
    let (ci, cd) = (col("inode")?, col("drops")?);
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(ci)?.parse::<u64>().ok()? == inode).then(|| f.get(cd)?.parse().ok())?
    })
}

async fn udp_loop(faz: Arc<Faz>, udp: UdpSocket, tx: mpsc::Sender<Batch>, stop: CancellationToken) {
    let mut buf = vec![0u8; 65_536];
    let inode = socket_inode(&udp);
    if inode.is_none() {
        tracing::warn!(
            "syslog UDP socket not found in /proc/self/fd: kernel drops are not counted"
        );
    }
    let mut checked = std::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Drops (ours and the kernel's) are counters in `/_lab/stats` and, when they grow, a
    // `syslog.dropped` lab event on the timeline.
    let reported = std::sync::atomic::AtomicU64::new(0);
    let update_drops = |faz: &Faz| {
        if let Some(d) = inode.and_then(kernel_udp_drops) {
            faz.counters
                .syslog_udp_kernel_drops
                .store(d, Ordering::Relaxed); // per socket, from its creation
        }
        let kernel = faz.counters.syslog_udp_kernel_drops.load(Ordering::Relaxed);
        let ours = faz.counters.syslog_dropped.load(Ordering::Relaxed);
        let before = reported.swap(kernel + ours, Ordering::Relaxed);
        if kernel + ours > before {
            faz.bus.emit(
                EventKind::SyslogDropped,
                serde_json::json!({"proto": "udp", "new": kernel + ours - before,
                                   "kernel_drops": kernel, "queue_drops": ours}),
            );
        }
    };
    // Drops happen only while datagrams arrive: an idle socket is not checked (reading
    // /proc/net/udp five times a second in every idle FortiAnalyzer of a class adds up).
    let mut unchecked = false;
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick(), if unchecked => {
                update_drops(&faz);
                checked = std::time::Instant::now();
                unchecked = false;
                continue;
            }
            r = udp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "syslog udp recv");
                    continue;
                }
            },
        };
        unchecked = true;
        let mut batch = Batch::new();
        accept_body(&faz, &buf[..n], peer, &mut batch);
        // Whatever else is already waiting travels in the same batch.
        let mut datagrams = 1;
        while batch.len() < BATCH_MSGS {
            match udp.try_recv_from(&mut buf) {
                Ok((n, peer)) => {
                    datagrams += 1;
                    accept_body(&faz, &buf[..n], peer, &mut batch);
                }
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let count = batch.len() as u64;
        if tx.try_send(batch).is_err() {
            faz.counters
                .syslog_dropped
                .fetch_add(count, Ordering::Relaxed);
        }
        if datagrams > 1 && checked.elapsed() > std::time::Duration::from_millis(200) {
            update_drops(&faz);
            checked = std::time::Instant::now();
        }
    }
}

async fn tcp_loop(
    faz: Arc<Faz>,
    listener: TcpListener,
    tx: mpsc::Sender<Batch>,
    partial_timeout: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "syslog tcp accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let faz = faz.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = tcp_conn(&faz, sock, peer, &tx, partial_timeout) => {
                    if let Err(e) = r {
                        faz.counters.syslog_bad.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, error = %e, "syslog tcp connection closed");
                    }
                }
            }
        });
    }
}

/// What the start of a TCP buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum TcpFrame {
    /// Not a complete message yet.
    Partial,
    /// A message: bytes `start..end` of the buffer; `consumed` bytes are used up.
    Msg {
        start: usize,
        end: usize,
        consumed: usize,
    },
}

/// Why a TCP stream cannot go on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum TcpFrameError {
    #[error("bad octet count")]
    BadCount,
    #[error("syslog message of {0} bytes exceeds {max}", max = MAX_MSG)]
    TooLarge(usize),
}

/// Frames the next message at the start of `buf`: octet counting (`LEN SP MSG`, RFC 6587)
/// when it starts with a digit, else a line ended by LF (a NUL also ends a message).
fn next_tcp_frame(buf: &[u8]) -> Result<TcpFrame, TcpFrameError> {
    let Some(&first) = buf.first() else {
        return Ok(TcpFrame::Partial);
    };
    if first.is_ascii_digit() {
        let Some(sp) = buf.iter().take(9).position(|b| *b == b' ') else {
            return if buf.len() >= 9 || !buf.iter().all(|b| b.is_ascii_digit()) {
                Err(TcpFrameError::BadCount)
            } else {
                Ok(TcpFrame::Partial)
            };
        };
        let digits = &buf[..sp];
        if !digits.iter().all(|b| b.is_ascii_digit()) {
            return Err(TcpFrameError::BadCount);
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(TcpFrameError::BadCount)?;
        if len == 0 || len > MAX_MSG {
            return Err(TcpFrameError::TooLarge(len));
        }
        let start = sp + 1;
        if buf.len() < start + len {
            return Ok(TcpFrame::Partial);
        }
        return Ok(TcpFrame::Msg {
            start,
            end: start + len,
            consumed: start + len,
        });
    }
    match buf
        .iter()
        .take(MAX_MSG + 1)
        .position(|b| *b == b'\n' || *b == 0)
    {
        Some(i) => Ok(TcpFrame::Msg {
            start: 0,
            end: i,
            consumed: i + 1,
        }),
        None if buf.len() > MAX_MSG => Err(TcpFrameError::TooLarge(buf.len())),
        None => Ok(TcpFrame::Partial),
    }
}

async fn tcp_conn(
    faz: &Faz,
    mut sock: tokio::net::TcpStream,
    peer: SocketAddr,
    tx: &mpsc::Sender<Batch>,
    partial_timeout: std::time::Duration,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut pos = 0usize;
    loop {
        // Every complete message in the buffer, as batches.
        let mut batch = Batch::new();
        loop {
            match next_tcp_frame(&buf[pos..]) {
                Ok(TcpFrame::Msg {
                    start,
                    end,
                    consumed,
                }) => {
                    let m = &buf[pos + start..pos + end];
                    if !m.iter().all(|b| b.is_ascii_whitespace()) {
                        accept_body(faz, m, peer, &mut batch);
                    }
                    pos += consumed;
                    if batch.len() >= BATCH_MSGS {
                        // Waits while the ingest queue is full: TCP back-pressure.
                        if tx.send(std::mem::take(&mut batch)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(TcpFrame::Partial) => break,
                Err(e) => {
                    if !batch.is_empty() {
                        let _ = tx.send(batch).await;
                    }
                    if matches!(e, TcpFrameError::TooLarge(_)) {
                        faz.counters.oversized.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return Ok(());
        }
        // Keep the unread tail at the front of the buffer.
        if pos > 0 {
            buf.drain(..pos);
            pos = 0;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(64 * 1024);
        }
        let started = !buf.is_empty();
        let read = sock.read_buf(&mut buf);
        let n = if started {
            // A message has started: it must complete in time.
            partial(partial_timeout, read).await?
        } else {
            read.await?
        };
        if n == 0 {
            // A last line without its LF still counts (an octet-counted frame cut short
            // does not).
            if !buf.is_empty() && !buf[0].is_ascii_digit() && buf.len() <= MAX_MSG {
                let mut batch = Batch::new();
                if !buf.iter().all(|b| b.is_ascii_whitespace()) {
                    accept_body(faz, &buf, peer, &mut batch);
                }
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
                }
            }
            return Ok(());
        }
    }
}

/// `fut` (the rest of a message whose first byte arrived), or `TimedOut` after `limit`.
async fn partial<T>(
    limit: std::time::Duration,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "syslog message not completed in time",
        )
    })?
}

/// Lines the indexer commits into the SQL store in one batch.
const INGEST_BATCH: usize = 5000;

/// Indexed batches waiting for their commit (and their events, alerts and notifications) at
/// most. The indexer does not wait for each commit, so the store's writer finds several
/// batches queued and commits them together (fewer, larger commits).
pub const IN_FLIGHT: usize = 8;

/// A device's wholly indexed raw log files are deleted beyond its newest this many bytes (the
/// archive's retention; [P]: FortiAnalyzer keeps its archive by days and disk quota).
pub const RAW_KEEP_BYTES: u64 = 1 << 30;

/// How long the appender waits between polls of its queue while an fsync is pending.
const SYNC_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The ingest thread: appends each batch to its devices' raw log files (a line is stored once
/// appended), fsyncs them within the sync window, and wakes the indexer.
fn append_loop(
    faz: Arc<Faz>,
    mut rx: mpsc::Receiver<Batch>,
    wake: std::sync::mpsc::SyncSender<()>,
    window: std::time::Duration,
) {
    let mut w = crate::rawlog::RawWriter::new(&faz.raw_log_dir(), crate::rawlog::ROTATE_BYTES);
    let sync = |w: &mut crate::rawlog::RawWriter| {
        if let Err(e) = w.sync(&faz.rawlog) {
            tracing::warn!(error = %e, "syslog: syncing the raw log failed");
        }
    };
    loop {
        let batch = match w.sync_in(window) {
            None => match rx.blocking_recv() {
                Some(b) => b,
                None => break,
            },
            Some(left) if left.is_zero() => {
                sync(&mut w);
                continue;
            }
            // An fsync is due within the window: poll (only while something waits for it).
            Some(left) => match rx.try_recv() {
                Ok(b) => b,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(left.min(SYNC_POLL));
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            },
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            append_batch(&faz, &mut w, batch)
        }));
        if let Err(p) = r {
            let msg = fortilab_core::supervise::panic_message(&*p);
            faz.supervisor.report_panic("syslog ingest", &msg);
        }
        let _ = wake.try_send(());
    }
    sync(&mut w);
}

/// Attributes each chunk by the sender's address (as FortiAnalyzer does) and appends it to
/// that device's raw log.
fn append_batch(faz: &Faz, w: &mut crate::rawlog::RawWriter, batch: Batch) {
    for c in batch.chunks {
        let Some(dev) = faz.syslog_sender(c.peer) else {
            faz.counters
                .syslog_unauthorized
                .fetch_add(c.lines, Ordering::Relaxed);
            continue;
        };
        match w.append(&dev.sn, &c.text) {
            Ok(()) => faz.rawlog.appended(c.lines, c.text.len() as u64),
            Err(e) => {
                faz.counters
                    .syslog_store_errors
                    .fetch_add(c.lines, Ordering::Relaxed);
                faz.rawlog.errors.fetch_add(1, Ordering::Relaxed);
                faz.store_error(e.to_string());
            }
        }
    }
}

/// What the indexer knows of a device: where it reads next, and what the store's key/value
/// table holds for it once everything submitted is committed (the next batch's
/// [`crate::store::Chain`] expects it).
#[derive(Debug, Clone, Default)]
struct DevCursor {
    next: crate::rawlog::Cursor,
    expect: Option<String>,
}

/// The indexer's state shared with its finisher.
#[derive(Debug, Default)]
struct IndexState {
    /// A batch was not committed: rewind to the committed cursors once nothing is in flight.
    failed: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// The committed cursors (key/value table).
fn load_cursors(faz: &Faz) -> std::collections::HashMap<String, DevCursor> {
    let kv = faz
        .store
        .kv_scan(crate::rawlog::CURSOR_KEY)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "raw log indexer: reading the cursors failed");
            Vec::new()
        });
    kv.into_iter()
        .filter_map(|(k, j)| {
            let dev = k.strip_prefix(crate::rawlog::CURSOR_KEY)?.to_string();
            let next = serde_json::from_str(&j).ok()?;
            Some((
                dev,
                DevCursor {
                    next,
                    expect: Some(j),
                },
            ))
        })
        .collect()
}

/// A batch handed to the finisher: its line and byte counts and what the store said.
type Finishing = (u64, u64, Result<crate::faz::Submitted, String>);

/// The indexer: reads the raw log files behind the appender, parses the lines, runs the IOC
/// engine and commits them into the SQL store with the device's cursor (a
/// [`crate::store::Chain`]: a batch is committed only right after the one before it), up to
/// [`IN_FLIGHT`] batches waiting for their commit. After a failed commit it waits for what is
/// in flight, goes back to the committed cursors and tries again a second later.
fn index_loop(
    faz: Arc<Faz>,
    reader: crate::rawlog::RawReader,
    mut cursors: std::collections::HashMap<String, DevCursor>,
    wake: std::sync::mpsc::Receiver<()>,
    stop: CancellationToken,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let state = Arc::new(IndexState::default());
    let (fin_tx, fin_rx) = std::sync::mpsc::sync_channel::<Finishing>(IN_FLIGHT);
    let finisher = {
        let (faz, state) = (faz.clone(), state.clone());
        std::thread::Builder::new()
            .name("faz-syslog-finish".into())
            .spawn(move || finish_loop(&faz, fin_rx, &state))
            .ok()
    };
    let mut warned = false;
    while !stop.is_cancelled() {
        if state.failed.load(SeqCst) {
            while state.in_flight.load(SeqCst) > 0 && !stop.is_cancelled() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            cursors = load_cursors(&faz);
            state.failed.store(false, SeqCst);
            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                wake.recv_timeout(std::time::Duration::from_secs(1))
            {
                break;
            }
            continue;
        }
        let mut busy = false;
        for dev in reader.devices() {
            let cur = cursors.get(&dev).cloned().unwrap_or_default();
            let got = match reader.read(&dev, cur.next, INGEST_BATCH) {
                Ok(g) => g,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "raw log indexer: reading failed");
                        warned = true;
                    }
                    continue;
                }
            };
            if got.lines.is_empty() {
                if got.next != cur.next {
                    cursors.insert(
                        dev,
                        DevCursor {
                            next: got.next,
                            expect: cur.expect,
                        },
                    );
                }
                continue;
            }
            busy = true;
            let next_json = serde_json::to_string(&got.next).unwrap_or_default();
            let client = faz
                .device(&dev)
                .is_some_and(|d| d.device_type == "forticlient");
            let (n, bytes) = (got.lines.len() as u64, got.bytes);
            let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                faz.parse_lines(client, got.lines)
            }));
            match parsed {
                Ok(p) => {
                    let p = p.unacknowledged().chained(crate::store::Chain {
                        key: crate::rawlog::cursor_key(&dev),
                        expect: cur.expect.clone(),
                        next: next_json.clone(),
                    });
                    let submitted = faz.submit(&dev, client, 0, p);
                    state.in_flight.fetch_add(1, SeqCst);
                    if fin_tx.send((n, bytes, submitted)).is_err() {
                        state.in_flight.fetch_sub(1, SeqCst);
                        break;
                    }
                }
                Err(payload) => {
                    // Reported; the lines stay in the raw log, the index goes on after them.
                    let msg = fortilab_core::supervise::panic_message(&*payload);
                    faz.supervisor.report_panic("syslog indexer", &msg);
                    let _ = faz
                        .store
                        .kv_put(&[(crate::rawlog::cursor_key(&dev), Some(next_json.clone()))]);
                    faz.rawlog.indexed(0, bytes);
                }
            }
            if got.next.file != cur.next.file {
                reader.prune(&dev, got.next, RAW_KEEP_BYTES);
            }
            cursors.insert(
                dev,
                DevCursor {
                    next: got.next,
                    expect: Some(next_json),
                },
            );
        }
        if !busy {
            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                wake.recv_timeout(std::time::Duration::from_secs(1))
            {
                break;
            }
        }
    }
    drop(fin_tx);
    if let Some(f) = finisher {
        let _ = f.join();
    }
}

/// Waits for each submitted batch's commit, in submission order, then raises its lab event,
/// alerts and notifications ([`crate::faz::Submitted::finish`]) and counts it indexed.
fn finish_loop(faz: &Faz, rx: std::sync::mpsc::Receiver<Finishing>, state: &IndexState) {
    use std::sync::atomic::Ordering::SeqCst;
    for (n, bytes, submitted) in rx {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            submitted.and_then(|s| s.finish(faz))
        }))
        .unwrap_or_else(|p| {
            let msg = fortilab_core::supervise::panic_message(&*p);
            faz.supervisor.report_panic("syslog ingest", &msg);
            Ok(0)
        });
        match r {
            Ok(_) => faz.rawlog.indexed(n, bytes),
            Err(e) => {
                if e != crate::store::STALE_CHAIN {
                    tracing::warn!(error = %e, "raw log indexer: commit failed; retrying");
                }
                state.failed.store(true, SeqCst);
            }
        }
        state.in_flight.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_framing_octet_counting_and_lines() {
        let msg = |start, end, consumed| TcpFrame::Msg {
            start,
            end,
            consumed,
        };
        assert_eq!(next_tcp_frame(b""), Ok(TcpFrame::Partial));
        assert_eq!(next_tcp_frame(b"12"), Ok(TcpFrame::Partial));
        assert_eq!(next_tcp_frame(b"5 ab"), Ok(TcpFrame::Partial));
        assert_eq!(next_tcp_frame(b"5 abcde7 x"), Ok(msg(2, 7, 7)));
        assert_eq!(next_tcp_frame(b"<13>a b\n<14>"), Ok(msg(0, 7, 8)));
        assert_eq!(next_tcp_frame(b"<13>a\0b"), Ok(msg(0, 5, 6)));
        assert_eq!(next_tcp_frame(b"<13>no end yet"), Ok(TcpFrame::Partial));
        assert_eq!(next_tcp_frame(b"12x4 abc"), Err(TcpFrameError::BadCount));
        assert_eq!(next_tcp_frame(b"123456789"), Err(TcpFrameError::BadCount));
        assert_eq!(
            next_tcp_frame(b"99999999 x"),
            Err(TcpFrameError::TooLarge(99_999_999))
        );
        assert_eq!(next_tcp_frame(b"0 "), Err(TcpFrameError::TooLarge(0)));
        let long = vec![b'a'; MAX_MSG + 1];
        assert_eq!(
            next_tcp_frame(&long),
            Err(TcpFrameError::TooLarge(MAX_MSG + 1))
        );
    }

    #[test]
    fn kernel_drops_are_read_from_the_socket_row() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:0202 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  124: 0100007F:0203 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n";
        assert_eq!(drops_in_table(table, 4242), Some(17));
        assert_eq!(drops_in_table(table, 4243), Some(0));
        assert_eq!(drops_in_table(table, 1), None);
    }

    /// A real socket nobody reads overflows: the kernel's drop counter for it goes up.
    #[test]
    fn kernel_drops_of_a_real_socket_are_seen() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp = {
            rx.set_nonblocking(true).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _g = rt.enter();
            UdpSocket::from_std(rx).unwrap()
        };
        let inode = socket_inode(&udp).expect("socket inode");
        assert_eq!(kernel_udp_drops(inode), Some(0));
        let payload = vec![b'x'; 1200];
        for _ in 0..3000 {
            tx.send_to(&payload, udp.local_addr().unwrap()).unwrap();
        }
        assert!(kernel_udp_drops(inode).unwrap() > 0);
    }

    #[test]
    fn strips_the_three_header_styles() {
        let kv =
            "date=2021-03-04 time=10:11:22 devname=\"FGT-LAB\" devid=\"FGVM01\" type=\"traffic\"";
        assert_eq!(body_of(&format!("<188>{kv}")), Some(kv));
        assert_eq!(
            body_of(&format!("<189>Mar  4 10:11:22 fgt-lab {kv}\n")),
            Some(kv)
        );
        assert_eq!(
            body_of(&format!("<189>Mar  4 10:11:22 fgt-lab fortigate: {kv}")),
            Some(kv)
        );
        assert_eq!(
            body_of(&format!("<189>1 2021-03-04T10:11:22Z fgt-lab - - - - {kv}")),
            Some(kv)
        );
        assert_eq!(
            body_of(&format!("<189>1 2021-03-04T10:11:22Z fgt-lab app 12 ID47 [ex@1 a=\"x]y\"][b@2 c=\"d\"] \u{feff}{kv}")),
            Some(kv)
        );
        assert_eq!(body_of(kv), Some(kv));
        assert_eq!(body_of("<13>"), None);
        assert_eq!(body_of("<13>1 short"), None);
        assert_eq!(body_of(""), None);
    }
}
