//! The per-link fault relay: a byte-transparent TCP relay that applies a link's
//! [`LinkCondition`] (see the parent module for the model).
//!
//! One [`Link`] holds the condition (a watch channel every connection follows) and counters;
//! each service reached over that link gets a relay listener ([`Link::serve`]) whose target is
//! the service's real socket. The outgoing connection is bound to the client's own loopback
//! address (`127.115.2.52` stays `127.115.2.52`), so a device that maps real peers back to lab
//! hosts sees the same peer as without the relay.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Fate, LinkCondition, LinkId, Shaper};

/// Bytes one direction of a connection holds in flight (read, not yet written) before it stops
/// reading: the relay's "window". Back-pressure beyond it is TCP's own.
pub const WINDOW: usize = 256 * 1024;
const CHUNK: usize = 16 * 1024;

/// Counters of a link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now (held ones included).
    pub open: AtomicU64,
    /// Connections waiting for a down link to come up.
    pub held: AtomicU64,
    /// Connections whose peer could not be reached.
    pub failed: AtomicU64,
    /// Bytes passed from the `a` side's clients to `b`'s services and back; a relay serves one
    /// direction of calls, so "up" is client → service.
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Datagrams passed client → service (UDP relays).
    pub datagrams: AtomicU64,
    /// Datagrams passed back, service → the client that sent to it (UDP relays).
    pub datagrams_back: AtomicU64,
    /// Datagrams dropped, either way: the link was down, or [`super::UDP_QUEUE`] were already
    /// waiting in that direction.
    pub datagrams_dropped: AtomicU64,
    /// Datagrams lost, either way (the link's loss probability).
    pub datagrams_lost: AtomicU64,
}

/// A link: its condition (lab time as set, and real time as applied) and counters.
pub struct Link {
    pub id: LinkId,
    /// The condition in real time (what the relays apply).
    tx: watch::Sender<LinkCondition>,
    /// The condition as set (lab time), for reports.
    lab: std::sync::Mutex<LinkCondition>,
    pub stats: LinkStats,
    seed: u64,
    conn_seq: AtomicU64,
    /// While a lab snapshot holds the link ([`Link::hold`]): the real condition to apply
    /// when the hold ends (the latest one set meanwhile).
    held: std::sync::Mutex<Option<LinkCondition>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("id", &self.id).finish()
    }
}

impl Link {
    pub fn new(id: LinkId, seed: u64) -> Arc<Link> {
        let (tx, _) = watch::channel(LinkCondition::CLEAN);
        Arc::new(Link {
            id,
            tx,
            lab: std::sync::Mutex::new(LinkCondition::CLEAN),
            stats: LinkStats::default(),
            seed,
            conn_seq: AtomicU64::new(0),
            held: std::sync::Mutex::new(None),
        })
    }

    /// Sets the condition: `lab` as given (lab time), applied as `real` (see
    /// [`LinkCondition::to_real`]).
    pub fn set(&self, lab: LinkCondition, real: LinkCondition) {
        *self.lab.lock().unwrap_or_else(|p| p.into_inner()) = lab;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(after) => *after = real,
            None => {
                self.tx.send_replace(real);
            }
        }
    }

    /// Holds the link for a lab snapshot: nothing passes (as when down: bytes in flight and
    /// new connections wait) until [`Link::release`]; the condition as set and reported does
    /// not change, and one set meanwhile applies at the release.
    pub fn hold(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            let cur = *self.tx.borrow();
            *held = Some(cur);
            self.tx.send_replace(LinkCondition { down: true, ..cur });
        }
    }

    /// Ends a [`Link::hold`]: the link's condition applies again.
    pub fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = held.take() {
            self.tx.send_replace(c);
        }
    }

    /// The condition as set (lab time).
    pub fn condition(&self) -> LinkCondition {
        *self.lab.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A JSON report: the link, its condition and counters.
    pub fn report(&self) -> serde_json::Value {
        let c = self.condition();
        let s = &self.stats;
        json!({
            "a": self.id.a, "b": self.id.b, "name": self.id.name(),
            "state": if c.down { "down" } else { "up" },
            "latency_ms": c.latency.as_secs_f64() * 1000.0,
            "loss": c.loss,
            "rate": c.rate_bps.map(super::format_rate),
            "rate_bps": c.rate_bps,
            "clean": c.is_clean(),
            "connections": s.connections.load(Ordering::Relaxed),
            "open": s.open.load(Ordering::Relaxed),
            "held": s.held.load(Ordering::Relaxed),
            "failed": s.failed.load(Ordering::Relaxed),
            "bytes_up": s.bytes_up.load(Ordering::Relaxed),
            "bytes_down": s.bytes_down.load(Ordering::Relaxed),
            "datagrams": s.datagrams.load(Ordering::Relaxed),
            "datagrams_back": s.datagrams_back.load(Ordering::Relaxed),
            "datagrams_dropped": s.datagrams_dropped.load(Ordering::Relaxed),
            "datagrams_lost": s.datagrams_lost.load(Ordering::Relaxed),
        })
    }

    /// Serves one relay listener until `shutdown`: each connection goes to the current
    /// `target` (a connection that arrives while the target is unknown is closed).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        target: watch::Receiver<Option<SocketAddr>>,
        shutdown: CancellationToken,
    ) {
        let what = format!("link relay {}", self.id.name());
        while let Some((client, peer)) = crate::http::accept_next(&listener, &shutdown, &what).await
        {
            let link = self.clone();
            let target = target.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                link.stats.connections.fetch_add(1, Ordering::Relaxed);
                link.stats.open.fetch_add(1, Ordering::Relaxed);
                link.connection(client, peer, target, shutdown).await;
                link.stats.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    async fn connection(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        target: watch::Receiver<Option<SocketAddr>>,
        shutdown: CancellationToken,
    ) {
        let mut cond = self.tx.subscribe();
        // A down link holds new connections until it is up again (SYN retransmissions); the
        // client's own timeouts decide how long that may take.
        if cond.borrow().down {
            self.stats.held.fetch_add(1, Ordering::Relaxed);
            let up = tokio::select! {
                _ = shutdown.cancelled() => false,
                r = cond.wait_for(|c| !c.down) => r.is_ok(),
            };
            self.stats.held.fetch_sub(1, Ordering::Relaxed);
            if !up {
                return;
            }
        }
        let Some(dst) = *target.borrow() else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let upstream = match connect_from(peer, dst).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(link = %self.id.name(), %dst, error = %e, "link relay: peer unreachable");
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let n = self.conn_seq.fetch_add(1, Ordering::Relaxed);
        let stream = |dir: &str| {
            crate::rng::stream(self.seed, &format!("link/{}/{n}/{dir}", self.id.name()))
        };
        let (cr, cw) = client.into_split();
        let (ur, uw) = upstream.into_split();
        let stop = shutdown.child_token();
        let origin = Instant::now();
        let up = pipe(
            cr,
            uw,
            cond.clone(),
            stream("up"),
            origin,
            &self.stats.bytes_up,
            stop.clone(),
        );
        let down = pipe(
            ur,
            cw,
            cond,
            stream("down"),
            origin,
            &self.stats.bytes_down,
            stop,
        );
        let _ = tokio::join!(up, down);
    }
}

/// A datagram on its way through a UDP relay.
struct Datagram {
    /// When it may leave (relay time).
    due: Duration,
    bytes: Bytes,
    /// Up (client → service): the client that sent it. Down (service → client): the client
    /// it goes back to.
    client: SocketAddr,
}

/// One direction of a UDP relay: its shaper (the link's condition, its own seeded draws) and
/// the datagrams waiting for their time.
struct UdpDirection {
    shaper: Shaper<ChaCha8Rng>,
    queue: VecDeque<Datagram>,
}

impl UdpDirection {
    fn new(cond: LinkCondition, now: Duration, rng: ChaCha8Rng) -> Self {
        Self {
            shaper: Shaper::new(cond, now, rng),
            queue: VecDeque::new(),
        }
    }

    fn head(&self) -> Option<Duration> {
        self.queue.front().map(|d| d.due)
    }

    /// What happens to a datagram of `n` bytes arriving now: `Some(due)` to send it (now if
    /// `due <= now` and nothing waits before it), `None` when it is dropped or lost (counted).
    fn admit(&mut self, n: usize, now: Duration, stats: &LinkStats) -> Option<Duration> {
        match self.shaper.datagram(n, now) {
            Fate::Dropped => {
                stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
            Fate::Lost => {
                stats.datagrams_lost.fetch_add(1, Ordering::Relaxed);
                None
            }
            Fate::At(at) if at > now || !self.queue.is_empty() => {
                if self.queue.len() >= super::UDP_QUEUE {
                    stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                    None
                } else {
                    Some(at)
                }
            }
            Fate::At(at) => Some(at),
        }
    }
}

/// Replies read from the outgoing sockets, on their way to the relay loop: (the client they go
/// back to, the bytes).
type Reply = (SocketAddr, Bytes);

/// Replies waiting for the relay loop before more are dropped (counted).
const REPLY_QUEUE: usize = 1024;

impl Link {
    /// Serves one UDP relay socket until `shutdown`, both ways. Each datagram from a client
    /// goes to the current `target` from a socket of its own for that client (bound to the
    /// client's own loopback address, so the service attributes by source address, as
    /// FortiAnalyzer does syslog); what the service answers on that socket goes back to the
    /// client from the relay's socket. Each direction has its own shaper: down drops (counted
    /// in `datagrams_dropped`), the loss rate loses (`datagrams_lost`), latency and rate delay
    /// (at most [`super::UDP_QUEUE`] waiting per direction, beyond that dropped and counted).
    pub async fn serve_udp(
        self: Arc<Self>,
        socket: UdpSocket,
        target: watch::Receiver<Option<SocketAddr>>,
        shutdown: CancellationToken,
    ) {
        let socket = Arc::new(socket);
        let mut cond = self.tx.subscribe();
        let origin = Instant::now();
        let now = || origin.elapsed();
        let rng =
            |dir: &str| crate::rng::stream(self.seed, &format!("link/{}/udp{dir}", self.id.name()));
        let initial = *cond.borrow_and_update();
        let mut up = UdpDirection::new(initial, now(), rng(""));
        let mut down = UdpDirection::new(initial, now(), rng("/down"));
        let mut watching = true;
        let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Reply>(REPLY_QUEUE);
        let stop = shutdown.child_token();
        let _stop_readers = stop.clone().drop_guard();
        let mut senders = Senders::new(reply_tx, stop);
        let mut buf = vec![0u8; 65_536];
        loop {
            let (up_head, down_head) = (up.head(), down.head());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = cond.changed(), if watching => {
                    let next = if changed.is_err() {
                        watching = false;
                        LinkCondition::CLEAN
                    } else {
                        *cond.borrow_and_update()
                    };
                    up.shaper.set_condition(next, now());
                    down.shaper.set_condition(next, now());
                }
                _ = sleep_until(origin, up_head), if up_head.is_some() => {
                    if let Some(d) = up.queue.pop_front() {
                        let dst = *target.borrow();
                        self.send_datagram(&mut senders, d.client, dst, &d.bytes).await;
                    }
                }
                _ = sleep_until(origin, down_head), if down_head.is_some() => {
                    if let Some(d) = down.queue.pop_front() {
                        self.send_back(&socket, d.client, &d.bytes).await;
                    }
                }
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { continue };
                    // A change of condition that raced with this datagram applies to it.
                    if watching {
                        self.follow(&mut cond, &mut up, &mut down, now());
                    }
                    let t = now();
                    match up.admit(n, t, &self.stats) {
                        Some(at) if at <= t && up.queue.is_empty() => {
                            let dst = *target.borrow();
                            self.send_datagram(&mut senders, peer, dst, &buf[..n]).await;
                        }
                        Some(at) => up.queue.push_back(Datagram {
                            due: at,
                            bytes: Bytes::copy_from_slice(&buf[..n]),
                            client: peer,
                        }),
                        None => {}
                    }
                }
                Some((client, bytes)) = reply_rx.recv() => {
                    if watching {
                        self.follow(&mut cond, &mut up, &mut down, now());
                    }
                    let t = now();
                    match down.admit(bytes.len(), t, &self.stats) {
                        Some(at) if at <= t && down.queue.is_empty() => {
                            self.send_back(&socket, client, &bytes).await;
                        }
                        Some(at) => down.queue.push_back(Datagram { due: at, bytes, client }),
                        None => {}
                    }
                }
            }
        }
    }

    /// Applies the link's current condition to both directions if it changed.
    fn follow(
        &self,
        cond: &mut watch::Receiver<LinkCondition>,
        up: &mut UdpDirection,
        down: &mut UdpDirection,
        now: Duration,
    ) {
        let c = *cond.borrow_and_update();
        for d in [up, down] {
            if c != *d.shaper.condition() {
                d.shaper.set_condition(c, now);
            }
        }
    }

    async fn send_datagram(
        self: &Arc<Self>,
        senders: &mut Senders,
        peer: SocketAddr,
        dst: Option<SocketAddr>,
        bytes: &[u8],
    ) {
        let Some(dst) = dst else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match senders.get(peer, dst, self).await {
            Some(s) if s.send_to(bytes, dst).await.is_ok() => {
                self.stats.datagrams.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_up
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            _ => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends a reply back to the client from the relay's own socket (the address the client
    /// sent to).
    async fn send_back(&self, socket: &UdpSocket, client: SocketAddr, bytes: &[u8]) {
        if socket.send_to(bytes, client).await.is_ok() {
            self.stats.datagrams_back.fetch_add(1, Ordering::Relaxed);
            self.stats
                .bytes_down
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        } else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The UDP relay's outgoing sockets, one per client address (IP and port, so each client's
/// replies find their way back; bound to the client's IP when it is a loopback address of the
/// destination's family, so the service sees the client's address). Each has a reader that
/// hands what the service answers to the relay loop.
struct Senders {
    by_client: std::collections::HashMap<SocketAddr, Arc<UdpSocket>>,
    replies: tokio::sync::mpsc::Sender<Reply>,
    /// Stops the readers (the relay ends, or the sockets are made anew).
    stop: CancellationToken,
    generation: CancellationToken,
}

impl Senders {
    /// Most sockets kept (a lab has a handful of senders; beyond this they are made anew).
    const MAX: usize = 256;

    fn new(replies: tokio::sync::mpsc::Sender<Reply>, stop: CancellationToken) -> Self {
        let generation = stop.child_token();
        Self {
            by_client: Default::default(),
            replies,
            stop,
            generation,
        }
    }

    async fn get(
        &mut self,
        peer: SocketAddr,
        dst: SocketAddr,
        link: &Arc<Link>,
    ) -> Option<Arc<UdpSocket>> {
        if let Some(s) = self.by_client.get(&peer) {
            return Some(s.clone());
        }
        let own = peer.ip().is_loopback() && peer.is_ipv4() == dst.is_ipv4();
        let any: SocketAddr = if dst.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = match own {
            true => match UdpSocket::bind(SocketAddr::new(peer.ip(), 0)).await {
                Ok(s) => s,
                Err(_) => UdpSocket::bind(any).await.ok()?,
            },
            false => UdpSocket::bind(any).await.ok()?,
        };
        if self.by_client.len() >= Self::MAX {
            self.by_client.clear();
            self.generation.cancel();
            self.generation = self.stop.child_token();
        }
        let sock = Arc::new(sock);
        self.by_client.insert(peer, sock.clone());
        tokio::spawn(read_replies(
            sock.clone(),
            peer,
            self.replies.clone(),
            self.generation.clone(),
            link.clone(),
        ));
        Some(sock)
    }
}

/// Reads what the service sends to one outgoing socket and hands it to the relay loop, for
/// `client`. A reply that finds the loop's queue full is dropped and counted (UDP).
async fn read_replies(
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    tx: tokio::sync::mpsc::Sender<Reply>,
    stop: CancellationToken,
    link: Arc<Link>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                match tx.try_send((client, Bytes::copy_from_slice(&buf[..n]))) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        link.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

/// Connects to `dst` from the client's own address when it is a loopback address other than
/// the destination's family default, so the service sees the same peer address.
async fn connect_from(peer: SocketAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let fut = async {
        if peer.ip().is_loopback() && peer.is_ipv4() == dst.is_ipv4() {
            let sock = if dst.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if sock.bind(SocketAddr::new(peer.ip(), 0)).is_ok() {
                return sock.connect(dst).await;
            }
        }
        TcpStream::connect(dst).await
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// One direction: read chunks, give each its release time from the shaper, write them in
/// order when due. A down link neither reads nor writes (bytes in flight wait). Ends at EOF
/// (after writing everything queued and shutting the write side) or on an error, which stops
/// the other direction too.
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut cond: watch::Receiver<LinkCondition>,
    rng: ChaCha8Rng,
    origin: Instant,
    counter: &AtomicU64,
    stop: CancellationToken,
) {
    let now = || origin.elapsed();
    let initial = *cond.borrow_and_update();
    let mut shaper = Shaper::new(initial, now(), rng);
    let mut queue: VecDeque<(Duration, Bytes)> = VecDeque::new();
    let mut queued = 0usize;
    let mut eof = false;
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut watching = true;
    loop {
        let c = *shaper.condition();
        if eof && queue.is_empty() {
            let _ = w.shutdown().await;
            return;
        }
        let head = queue.front().map(|(t, _)| *t);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = cond.changed(), if watching => {
                if changed.is_err() {
                    // The link is gone (lab stopped): pass bytes as a clean link.
                    watching = false;
                    shaper.set_condition(LinkCondition::CLEAN, now());
                } else {
                    let next = *cond.borrow_and_update();
                    shaper.set_condition(next, now());
                }
            }
            _ = sleep_until(origin, head), if head.is_some() && !c.down => {
                if let Some((_, bytes)) = queue.pop_front() {
                    queued -= bytes.len();
                    if w.write_all(&bytes).await.is_err() {
                        stop.cancel();
                        return;
                    }
                    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
            }
            res = read_chunk(&mut r, &mut buf), if !eof && !c.down && queued < WINDOW => {
                match res {
                    Ok(0) => eof = true,
                    Ok(_) => {
                        let bytes = buf.split().freeze();
                        let t = now();
                        if c.is_clean() && queue.is_empty() {
                            if w.write_all(&bytes).await.is_err() {
                                stop.cancel();
                                return;
                            }
                            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        } else {
                            let at = shaper.release_at(bytes.len(), t);
                            queued += bytes.len();
                            queue.push_back((at, bytes));
                        }
                    }
                    Err(_) => {
                        stop.cancel();
                        return;
                    }
                }
            }
        }
    }
}

async fn read_chunk(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() < CHUNK {
        buf.reserve(CHUNK);
    }
    r.read_buf(buf).await
}

async fn sleep_until(origin: Instant, at: Option<Duration>) {
    match at {
        Some(at) => tokio::time::sleep_until((origin + at).into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        a
    }

    async fn relay(link: &Arc<Link>, dst: SocketAddr) -> (SocketAddr, CancellationToken) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let (_tx, rx) = watch::channel(Some(dst));
        let stop = CancellationToken::new();
        tokio::spawn(link.clone().serve(l, rx, stop.clone()));
        // Keep the target sender alive for the test's duration.
        std::mem::forget(_tx);
        (a, stop)
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_clean_link_is_byte_transparent() {
        let link = Link::new(LinkId::new("fortigate", "faz").unwrap(), 1);
        let (a, _stop) = relay(&link, echo_server().await).await;
        let mut s = TcpStream::connect(a).await.unwrap();
        let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&msg).await.unwrap();
        };
        let mut got = vec![0u8; msg.len()];
        let recv = r.read_exact(&mut got);
        let (_, n) = tokio::join!(send, recv);
        n.unwrap();
        assert_eq!(got, msg);
        assert_eq!(link.stats.bytes_up.load(Ordering::Relaxed), 200_000);
    }

    #[tokio::test]
    async fn down_holds_bytes_and_new_connections_until_up_and_loses_nothing() {
        let link = Link::new(LinkId::new("fortigate", "faz").unwrap(), 1);
        let (a, _stop) = relay(&link, echo_server().await).await;
        let mut s = TcpStream::connect(a).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
        let down = LinkCondition {
            down: true,
            ..LinkCondition::CLEAN
        };
        link.set(down, down);
        // An existing connection stalls.
        s.write_all(b"during").await.unwrap();
        let mut b = [0u8; 6];
        let r = tokio::time::timeout(Duration::from_millis(200), s.read_exact(&mut b)).await;
        assert!(r.is_err(), "bytes passed a down link");
        // A new one is held.
        let mut s2 = TcpStream::connect(a).await.unwrap();
        s2.write_all(b"new").await.unwrap();
        let mut b2 = [0u8; 3];
        let r = tokio::time::timeout(Duration::from_millis(100), s2.read_exact(&mut b2)).await;
        assert!(r.is_err(), "a new connection passed a down link");
        assert_eq!(link.stats.held.load(Ordering::Relaxed), 1);
        assert_eq!(link.report()["state"], "down");
        // Up: everything arrives.
        link.set(LinkCondition::CLEAN, LinkCondition::CLEAN);
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"during");
        s2.read_exact(&mut b2).await.unwrap();
        assert_eq!(&b2, b"new");
    }

    #[tokio::test]
    async fn a_hold_stops_bytes_without_changing_the_reported_condition() {
        let link = Link::new(LinkId::new("fortigate", "faz").unwrap(), 1);
        let (a, _stop) = relay(&link, echo_server().await).await;
        let mut s = TcpStream::connect(a).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
        link.hold();
        s.write_all(b"during").await.unwrap();
        let mut b = [0u8; 6];
        let r = tokio::time::timeout(Duration::from_millis(150), s.read_exact(&mut b)).await;
        assert!(r.is_err(), "bytes passed a held link");
        assert_eq!(link.report()["state"], "up");
        // A condition set during the hold applies at the release.
        let slow = LinkCondition {
            latency: Duration::from_millis(5),
            ..LinkCondition::CLEAN
        };
        link.set(slow, slow);
        assert!(link.tx.borrow().down);
        link.release();
        assert_eq!(*link.tx.borrow(), slow);
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"during");
        link.release(); // a second release changes nothing
        assert_eq!(*link.tx.borrow(), slow);
    }

    #[tokio::test]
    async fn latency_and_rate_slow_the_stream_by_the_models_amount() {
        let link = Link::new(LinkId::new("endpoints", "fortigate").unwrap(), 1);
        let (a, _stop) = relay(&link, echo_server().await).await;
        let c = LinkCondition {
            latency: Duration::from_millis(50),
            ..LinkCondition::CLEAN
        };
        link.set(c, c);
        let mut s = TcpStream::connect(a).await.unwrap();
        let t = Instant::now();
        roundtrip(&mut s, b"ping").await;
        let rtt = t.elapsed();
        // 50 ms each way.
        assert!(rtt >= Duration::from_millis(100), "{rtt:?}");
        assert!(rtt < Duration::from_millis(1000), "{rtt:?}");
        // 800 kbit/s = 100 KB/s each way: 50 KB echoed takes about half a second.
        let c = LinkCondition {
            rate_bps: Some(800_000),
            ..LinkCondition::CLEAN
        };
        link.set(c, c);
        let msg = vec![7u8; 50_000];
        let t = Instant::now();
        let (mut r, mut w) = s.split();
        let mut got = vec![0u8; msg.len()];
        let (_, res) = tokio::join!(w.write_all(&msg), r.read_exact(&mut got));
        res.unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(got, msg);
    }

    /// A UDP relay passes datagrams from the client's own address, drops (and counts) them
    /// while the link is down, and loses the given share.
    #[tokio::test]
    async fn udp_datagrams_pass_clean_are_dropped_while_down_and_lost_at_the_loss_rate() {
        let service = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let link = Link::new(LinkId::new("fortigate", "faz").unwrap(), 1);
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = sock.local_addr().unwrap();
        let (tx, rx) = watch::channel(Some(service.local_addr().unwrap()));
        let stop = CancellationToken::new();
        tokio::spawn(link.clone().serve_udp(sock, rx, stop.clone()));
        let client = UdpSocket::bind("127.115.2.1:0").await.unwrap();
        let mut buf = [0u8; 64];
        async fn recv_one(service: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
            tokio::time::timeout(Duration::from_millis(300), service.recv_from(buf))
                .await
                .ok()
                .map(|r| r.unwrap())
        }
        let recv = recv_one;
        client.send_to(b"clean", relay_addr).await.unwrap();
        let (n, from) = recv(&service, &mut buf)
            .await
            .expect("a datagram over a clean link");
        assert_eq!(&buf[..n], b"clean");
        assert_eq!(from.ip().to_string(), "127.115.2.1");
        let down = LinkCondition {
            down: true,
            ..LinkCondition::CLEAN
        };
        link.set(down, down);
        tokio::task::yield_now().await;
        for _ in 0..5 {
            client.send_to(b"down", relay_addr).await.unwrap();
        }
        assert!(
            recv(&service, &mut buf).await.is_none(),
            "a datagram crossed a down link"
        );
        assert_eq!(link.stats.datagrams_dropped.load(Ordering::Relaxed), 5);
        link.set(LinkCondition::CLEAN, LinkCondition::CLEAN);
        tokio::task::yield_now().await;
        client.send_to(b"up again", relay_addr).await.unwrap();
        let (n, _) = recv(&service, &mut buf)
            .await
            .expect("a datagram once the link is up");
        assert_eq!(&buf[..n], b"up again");
        let lossy = LinkCondition {
            loss: 0.5,
            ..LinkCondition::CLEAN
        };
        link.set(lossy, lossy);
        tokio::task::yield_now().await;
        let sent = 200;
        for _ in 0..sent {
            client.send_to(b"x", relay_addr).await.unwrap();
        }
        let mut got = 0;
        while recv(&service, &mut buf).await.is_some() {
            got += 1;
        }
        let lost = link.stats.datagrams_lost.load(Ordering::Relaxed);
        assert_eq!(
            got + lost,
            sent,
            "every datagram passed or was counted lost"
        );
        assert!((60..=140).contains(&lost), "{lost} of {sent} lost");
        assert_eq!(link.report()["datagrams"], 2 + got);
        stop.cancel();
        drop(tx);
    }

    /// Replies come back: what the service answers goes to the client that sent (each client
    /// its own, two on one address told apart by port), from the relay's address; down drops
    /// replies (counted) and the loss rate loses them (counted), as on the way in.
    #[tokio::test]
    async fn udp_replies_pass_back_to_their_client_with_the_same_faults() {
        let service = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let link = Link::new(LinkId::new("endpoints", "fortigate").unwrap(), 7);
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = sock.local_addr().unwrap();
        let (tx, rx) = watch::channel(Some(service.local_addr().unwrap()));
        let stop = CancellationToken::new();
        tokio::spawn(link.clone().serve_udp(sock, rx, stop.clone()));
        let c1 = UdpSocket::bind("127.115.2.52:0").await.unwrap();
        let c2 = UdpSocket::bind("127.115.2.52:0").await.unwrap();
        let mut buf = [0u8; 64];
        async fn recv(s: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
            tokio::time::timeout(Duration::from_millis(300), s.recv_from(buf))
                .await
                .ok()
                .map(|r| r.unwrap())
        }
        // Each client's request reaches the service from the client's own IP; each answer
        // goes back to the client that asked, from the address it sent to.
        c1.send_to(b"q1", relay_addr).await.unwrap();
        let (n, from1) = recv(&service, &mut buf).await.expect("request 1");
        assert_eq!(
            (&buf[..n], from1.ip().to_string().as_str()),
            (&b"q1"[..], "127.115.2.52")
        );
        c2.send_to(b"q2", relay_addr).await.unwrap();
        let (n, from2) = recv(&service, &mut buf).await.expect("request 2");
        assert_eq!(&buf[..n], b"q2");
        assert_ne!(from1, from2, "two clients share one outgoing socket");
        service.send_to(b"a2", from2).await.unwrap();
        service.send_to(b"a1", from1).await.unwrap();
        let (n, src) = recv(&c1, &mut buf).await.expect("answer 1");
        assert_eq!((&buf[..n], src), (&b"a1"[..], relay_addr));
        let (n, src) = recv(&c2, &mut buf).await.expect("answer 2");
        assert_eq!((&buf[..n], src), (&b"a2"[..], relay_addr));
        assert_eq!(link.report()["datagrams_back"], 2);
        // Down: the answer to a request that got through before is dropped and counted.
        let down = LinkCondition {
            down: true,
            ..LinkCondition::CLEAN
        };
        link.set(down, down);
        tokio::task::yield_now().await;
        service.send_to(b"late", from1).await.unwrap();
        assert!(
            recv(&c1, &mut buf).await.is_none(),
            "a reply crossed a down link"
        );
        assert_eq!(link.stats.datagrams_dropped.load(Ordering::Relaxed), 1);
        // Up again: answers pass.
        link.set(LinkCondition::CLEAN, LinkCondition::CLEAN);
        tokio::task::yield_now().await;
        service.send_to(b"again", from1).await.unwrap();
        let (n, _) = recv(&c1, &mut buf)
            .await
            .expect("a reply once the link is up");
        assert_eq!(&buf[..n], b"again");
        // Lossy: every answer arrives or is counted lost.
        let lossy = LinkCondition {
            loss: 0.5,
            ..LinkCondition::CLEAN
        };
        link.set(lossy, lossy);
        tokio::task::yield_now().await;
        let sent = 200;
        for _ in 0..sent {
            service.send_to(b"x", from2).await.unwrap();
        }
        let mut got = 0;
        while recv(&c2, &mut buf).await.is_some() {
            got += 1;
        }
        let lost = link.stats.datagrams_lost.load(Ordering::Relaxed);
        assert_eq!(got + lost, sent, "every reply passed or was counted lost");
        assert!((60..=140).contains(&lost), "{lost} of {sent} lost");
        // Latency applies to replies too.
        let slow = LinkCondition {
            latency: Duration::from_millis(80),
            ..LinkCondition::CLEAN
        };
        link.set(slow, slow);
        tokio::task::yield_now().await;
        let t = Instant::now();
        service.send_to(b"slow", from1).await.unwrap();
        let (n, _) = recv(&c1, &mut buf).await.expect("a delayed reply");
        assert_eq!(&buf[..n], b"slow");
        assert!(
            t.elapsed() >= Duration::from_millis(80),
            "{:?}",
            t.elapsed()
        );
        stop.cancel();
        drop(tx);
    }

    #[tokio::test]
    async fn the_service_sees_the_clients_own_loopback_address() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dst = l.local_addr().unwrap();
        let link = Link::new(LinkId::new("endpoints", "ems").unwrap(), 1);
        let (a, _stop) = relay(&link, dst).await;
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.115.2.52:0".parse().unwrap()).unwrap();
        let _c = sock.connect(a).await.unwrap();
        let (_s, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.115.2.52");
    }
}
