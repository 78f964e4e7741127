//! Sender ↔ receiver tests over real TLS on loopback, with an in-memory sink.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Frame, FrameCodec};
use super::*;
use crate::clock::LabClock;
use crate::tls::{self, ClientAuth, LabCa};
use crate::wait::wait_for;

const FGT: &str = "FGVM01TM20000001";

struct Lab {
    ca: LabCa,
    server_tls: Arc<rustls::ServerConfig>,
}

fn lab() -> Lab {
    let ca = LabCa::generate("test").unwrap();
    let cert = ca
        .issue("FAZ-VM0000000001", &["10.115.1.20".into()])
        .unwrap();
    let server_tls = tls::server_config(&ca, &cert, ClientAuth::Required, &[ALPN]).unwrap();
    Lab { ca, server_tls }
}

fn hello(serial: &str) -> Hello {
    Hello {
        serial: serial.into(),
        hostname: "FGT-LAB".into(),
        platform: "FortiGate-VM64".into(),
        version: "6.4.4".into(),
        device_type: "fortigate".into(),
        vdom: "root".into(),
        ip: None,
    }
}

fn ioc(id: u64, srcip: &str) -> Notification {
    Notification::new(
        id,
        Notice::Ioc(IocNotification {
            verdict: "Infected".into(),
            ioc_level: IocLevel::High,
            srcip: srcip.into(),
            mac: None,
            user: None,
            hostname: None,
            devid: FGT.into(),
            vdom: "root".into(),
            threat: "www.eicar.org".into(),
            detect_method: "Infected-domain".into(),
            epid: Some(1041),
            timestamp: 0,
        }),
    )
}

fn ioc_ack(id: u64, srcip: &str) -> Notification {
    Notification::new(
        id,
        Notice::IocAck(IocAckNotification {
            srcip: srcip.into(),
            epid: Some(1041),
            devid: FGT.into(),
            comment: String::new(),
        }),
    )
}

fn faz() -> Hello {
    Hello::fortianalyzer("FAZ-VM0000000001", "FAZ-LAB", "6.4.4")
}

struct Running {
    rx: LogReceiver,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn kill(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn start_receiver(
    lab: &Lab,
    sink: Arc<dyn LogSink>,
    addr: SocketAddr,
) -> (Running, SocketAddr) {
    // Rebinding the port a killed receiver used can race its last sockets: retry briefly.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    };
    let local = listener.local_addr().unwrap();
    let rx = LogReceiver::new(sink, faz(), LabClock::real());
    let stop = CancellationToken::new();
    let r2 = rx.clone();
    let tls = lab.server_tls.clone();
    let s2 = stop.clone();
    let task = tokio::spawn(async move { r2.serve(listener, tls, s2).await });
    (Running { rx, stop, task }, local)
}

fn sender_cfg(
    lab: &Lab,
    server: SocketAddr,
    serial: &str,
    cn: &str,
    dir: &Path,
    mem_limit: usize,
) -> SenderConfig {
    let id = lab.ca.issue(cn, &[]).unwrap();
    SenderConfig {
        server,
        server_name: "localhost".into(),
        tls: tls::client_config(&lab.ca, Some(&id)).unwrap(),
        hello: hello(serial),
        queue_dir: dir.to_path_buf(),
        mem_limit,
        upload: UploadOption::Realtime,
        clock: LabClock::real(),
        reconnect_delay: Duration::from_millis(20),
    }
}

fn line(i: u64) -> String {
    format!(
        "date=2021-03-04 time=10:11:{:02} devname=\"FGT-LAB\" devid=\"{FGT}\" logid=\"0317013312\" type=\"utm\" subtype=\"webfilter\" n={i}",
        i % 60
    )
}

fn assert_exactly_once(sink: &MemorySink, n: u64) {
    let got = sink.lines(FGT);
    assert_eq!(got.len() as u64, n, "every line stored exactly once");
    for (i, l) in got.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(l.seq, seq);
        assert_eq!(l.line, line(seq));
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A receiver with an auto-authorizing memory sink, a real-time sender to it (memory queue of
/// 100,000 lines), its shutdown token and its queue directory.
async fn pair(
    lab: &Lab,
) -> (
    Arc<MemorySink>,
    Running,
    LogSender,
    CancellationToken,
    tempfile::TempDir,
) {
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (tx, _notifications) = LogSender::start(
        sender_cfg(lab, addr, FGT, FGT, dir.path(), 100_000),
        stop.clone(),
    )
    .unwrap();
    (sink, recv, tx, stop, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lines_arrive_once_in_order() {
    let lab = lab();
    let (sink, recv, tx, stop, _dir) = pair(&lab).await;
    for i in 1..=10_000u64 {
        assert_eq!(tx.send(line(i)), i);
    }
    assert!(
        tx.flush(Duration::from_secs(60)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert_exactly_once(&sink, 10_000);
    let st = tx.stats();
    assert!(st.connected);
    assert_eq!(st.registration, Some(RegStatus::Registered));
    assert_eq!((st.acked_seq, st.next_seq, st.queued), (10_000, 10_001, 0));
    assert_eq!(st.server_serial.as_deref(), Some("FAZ-VM0000000001"));
    let sessions = recv.rx.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].serial, FGT);
    assert_eq!(sessions[0].last_seq, 10_000);
    assert_eq!(sink.hello_of(FGT).unwrap().hostname, "FGT-LAB");
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_stream_loses_and_duplicates_nothing() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), 2_000),
        stop.clone(),
    )
    .unwrap();
    let total = 30_000u64;
    let mut i = 0u64;
    while i < 10_000 {
        i += 1;
        tx.send(line(i));
    }
    wait_for("some lines stored", Duration::from_secs(30), || {
        sink.count(FGT) >= 1_000
    })
    .await;
    recv.kill().await; // mid-stream: part stored, part in flight
    let stored_at_kill = sink.count(FGT);
    while i < 20_000 {
        i += 1;
        tx.send(line(i));
    }
    wait_for("the sender notices", Duration::from_secs(30), || {
        !tx.stats().connected
    })
    .await;
    let (recv, _) = start_receiver(&lab, sink.clone(), addr).await;
    while i < total {
        i += 1;
        tx.send(line(i));
    }
    assert!(
        tx.flush(Duration::from_secs(60)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert!(stored_at_kill < total);
    assert_exactly_once(&sink, total);
    assert!(tx.stats().reconnects >= 1);
    // Once more, killing while the sender is streaming hard.
    let (tx2, recv) = (tx.clone(), recv);
    let pump = tokio::spawn(async move {
        for j in total + 1..=total + 20_000 {
            tx2.send(line(j));
            if j % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    wait_for("more lines stored", Duration::from_secs(30), || {
        sink.count(FGT) > total + 100
    })
    .await;
    recv.kill().await;
    pump.await.unwrap();
    let (recv, _) = start_receiver(&lab, sink.clone(), addr).await;
    assert!(
        tx.flush(Duration::from_secs(60)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert_exactly_once(&sink, total + 20_000);
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_away_queue_spills_to_disk_with_bounded_memory() {
    let lab = lab();
    let addr = free_addr(); // nobody listens yet
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mem_limit = 500;
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), mem_limit),
        stop.clone(),
    )
    .unwrap();
    let total = 25_000u64;
    for i in 1..=total {
        tx.send(line(i));
        if i % 100 == 0 {
            let st = tx.stats();
            assert!(
                st.in_memory <= mem_limit as u64,
                "in memory {} > {mem_limit}",
                st.in_memory
            );
            assert_eq!(st.queued, i);
        }
    }
    let st = tx.stats();
    assert!(!st.connected);
    assert!(st.spilled >= total - mem_limit as u64, "{st:?}");
    assert!(st.reconnects >= 1 && st.last_error.is_some(), "{st:?}");
    let segments = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count()
    };
    assert!(segments() >= 3, "spilled to several segment files");
    let sink = Arc::new(MemorySink::new(true));
    let (recv, _) = start_receiver(&lab, sink.clone(), addr).await;
    assert!(
        tx.flush(Duration::from_secs(60)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert_exactly_once(&sink, total);
    assert_eq!(segments(), 0, "acknowledged segments are deleted");
    assert_eq!(tx.stats().spilled, 0);
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_device_stores_nothing_until_authorized() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(false));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), 10_000),
        stop.clone(),
    )
    .unwrap();
    for i in 1..=300u64 {
        tx.send(line(i));
    }
    wait_for("unauthorized", Duration::from_secs(30), || {
        tx.stats().registration == Some(RegStatus::Unauthorized)
    })
    .await;
    assert!(!tx.flush(Duration::from_millis(300)).await);
    assert_eq!(sink.count(FGT), 0);
    assert_eq!(tx.stats().queued, 300);
    assert_eq!(recv.rx.sessions()[0].status, RegStatus::Unauthorized);
    sink.authorize(FGT);
    recv.rx.authorize(FGT);
    assert!(
        tx.flush(Duration::from_secs(30)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert_exactly_once(&sink, 300);
    assert_eq!(tx.stats().registration, Some(RegStatus::Registered));
    assert_eq!(recv.rx.sessions()[0].status, RegStatus::Registered);
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

/// A hand-driven client for protocol-level tests.
struct RawClient {
    rd: FramedRead<
        tokio::io::ReadHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        FrameCodec,
    >,
    wr: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl RawClient {
    async fn connect(lab: &Lab, addr: SocketAddr, cn: &str) -> RawClient {
        let id = lab.ca.issue(cn, &[]).unwrap();
        let mut cfg = (*tls::client_config(&lab.ca, Some(&id)).unwrap()).clone();
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(tls::server_name("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (rd, wr) = tokio::io::split(tls);
        RawClient {
            rd: FramedRead::new(rd, FrameCodec),
            wr,
        }
    }

    async fn send(&mut self, f: &Frame) {
        self.wr.write_all(&frame::to_bytes(f)).await.unwrap();
    }

    async fn send_raw(&mut self, b: &[u8]) {
        self.wr.write_all(b).await.unwrap();
    }

    /// The next frame other than Ping (None at EOF).
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let f = tokio::time::timeout(Duration::from_secs(10), self.rd.next())
                .await
                .expect("frame within 10 s");
            match f {
                Some(Ok(Frame::Ping)) => continue,
                Some(Ok(f)) => return Some(f),
                _ => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_delivered_acked_retransmitted_and_deduplicated() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    // Queued before the device connects: delivered on connection.
    assert!(!recv.rx.notify(FGT, ioc(1, "10.115.2.52")));
    // A raw client that does not acknowledge: the notification comes again on reconnect.
    let mut raw = RawClient::connect(&lab, addr, FGT).await;
    raw.send(&Frame::Hello(hello(FGT))).await;
    assert!(matches!(raw.next().await, Some(Frame::HelloReply(_))));
    match raw.next().await {
        Some(Frame::Notify(n)) => assert_eq!(n.id, 1),
        other => panic!("{other:?}"),
    }
    drop(raw);
    wait_for("raw session gone", Duration::from_secs(10), || {
        recv.rx.sessions().is_empty()
    })
    .await;
    assert_eq!(recv.rx.pending_notifications(FGT).len(), 1);
    // The real sender gets it, acknowledges it, and passes it on once.
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (tx, mut notes) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), 1000),
        stop.clone(),
    )
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.notice.kind(), "ioc");
    wait_for("ack reaches the receiver", Duration::from_secs(10), || {
        recv.rx.pending_notifications(FGT).is_empty() && !sink.acked_notifications().is_empty()
    })
    .await;
    assert_eq!(sink.acked_notifications(), vec![(FGT.to_string(), 1)]);
    // Live delivery, and a duplicate id is acknowledged but not passed on again.
    assert!(recv.rx.notify(FGT, ioc_ack(2, "10.115.2.52")));
    let n = tokio::time::timeout(Duration::from_secs(10), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.id, 2);
    wait_for("ack of 2", Duration::from_secs(10), || {
        sink.acked_notifications().len() == 2
    })
    .await;
    assert!(recv.rx.notify(FGT, ioc_ack(2, "10.115.2.52")));
    wait_for("duplicate acked", Duration::from_secs(10), || {
        sink.acked_notifications().len() == 3
    })
    .await;
    assert!(notes.try_recv().is_err(), "duplicate id dropped");
    // Survives a receiver restart: the unacked notification is delivered after reconnect.
    recv.kill().await;
    let (recv, _) = start_receiver(&lab, sink.clone(), addr).await;
    recv.rx.notify(FGT, ioc(3, "10.115.2.52"));
    let n = tokio::time::timeout(Duration::from_secs(30), notes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.id, 3);
    drop(tx);
    stop.cancel();
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_cn_must_match_the_hello_serial() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, "FGVM01TM99999999", dir.path(), 1000),
        stop.clone(),
    )
    .unwrap();
    tx.send(line(1));
    wait_for("refusal", Duration::from_secs(10), || {
        tx.stats()
            .last_error
            .is_some_and(|e| e.contains("cert-mismatch"))
    })
    .await;
    assert_eq!(sink.hellos(), 0, "the sink never sees the impostor");
    assert_eq!(sink.count(FGT), 0);
    assert!(recv.rx.stats().refused >= 1);
    assert!(tx.stats().registration.is_none());
    // The raw view: an Error frame, then the connection closes.
    let mut raw = RawClient::connect(&lab, addr, "SOMEONE-ELSE").await;
    raw.send(&Frame::Hello(hello(FGT))).await;
    match raw.next().await {
        Some(Frame::Error(e)) => assert_eq!(e.code, "cert-mismatch"),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.next().await, None);
    stop.cancel();
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_close_the_connection_but_not_the_receiver() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    // Garbage instead of a hello.
    let mut raw = RawClient::connect(&lab, addr, FGT).await;
    raw.send_raw(&[0, 0, 0, 3, 1, b'{', b'!']).await;
    match raw.next().await {
        Some(Frame::Error(e)) => assert_eq!(e.code, "malformed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.next().await, None);
    // An oversized frame after a good hello.
    let mut raw = RawClient::connect(&lab, addr, FGT).await;
    raw.send(&Frame::Hello(hello(FGT))).await;
    assert!(matches!(raw.next().await, Some(Frame::HelloReply(_))));
    let mut big = BytesMut::new();
    big.put_u32(17 * 1024 * 1024);
    big.put_u8(3);
    raw.send_raw(&big).await;
    match raw.next().await {
        Some(Frame::Error(e)) => assert_eq!(e.code, "oversized"),
        other => panic!("{other:?}"),
    }
    // A frame only the server may send.
    let mut raw = RawClient::connect(&lab, addr, FGT).await;
    raw.send(&Frame::Hello(hello(FGT))).await;
    assert!(matches!(raw.next().await, Some(Frame::HelloReply(_))));
    raw.send(&Frame::Ack(5)).await;
    match raw.next().await {
        Some(Frame::Error(e)) => assert_eq!(e.code, "protocol"),
        other => panic!("{other:?}"),
    }
    let st = recv.rx.stats();
    assert_eq!((st.malformed, st.oversized, st.protocol_errors), (1, 1, 1));
    // Still serving: a raw batch is stored and acknowledged.
    let mut raw = RawClient::connect(&lab, addr, FGT).await;
    raw.send(&Frame::Hello(hello(FGT))).await;
    assert!(matches!(raw.next().await, Some(Frame::HelloReply(_))));
    raw.send(&Frame::Batch {
        first_seq: 1,
        lines: vec![line(1), line(2)],
    })
    .await;
    assert_eq!(raw.next().await, Some(Frame::Ack(2)));
    // A resent batch overlapping what is stored: duplicates dropped, ack moves on.
    raw.send(&Frame::Batch {
        first_seq: 2,
        lines: vec![line(2), line(3)],
    })
    .await;
    assert_eq!(raw.next().await, Some(Frame::Ack(3)));
    raw.send(&Frame::Ping).await;
    assert_eq!(raw.next().await, Some(Frame::Pong));
    assert_exactly_once(&sink, 3);
    assert_eq!(sink.duplicates(FGT), 1);
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sender_continues_numbering_and_resends_its_saved_queue() {
    let lab = lab();
    let addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    // First run: nobody listens; 50 lines queued in memory, then a clean stop.
    let stop = CancellationToken::new();
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), 1000),
        stop.clone(),
    )
    .unwrap();
    for i in 1..=50u64 {
        tx.send(line(i));
    }
    stop.cancel();
    tx.stopped().await;
    // Second run: numbering continues, the saved lines are delivered first.
    let sink = Arc::new(MemorySink::new(true));
    let (recv, _) = start_receiver(&lab, sink.clone(), addr).await;
    let stop = CancellationToken::new();
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), 1000),
        stop.clone(),
    )
    .unwrap();
    for i in 51..=80u64 {
        assert_eq!(tx.send(line(i)), i);
    }
    assert!(
        tx.flush(Duration::from_secs(30)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert_exactly_once(&sink, 80);
    stop.cancel();
    tx.stopped().await;
    // A sender whose queue directory was wiped is renumbered above what the server has.
    let dir2 = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir2.path(), 1000),
        stop.clone(),
    )
    .unwrap();
    tx.send("after wipe".into());
    assert!(
        tx.flush(Duration::from_secs(30)).await,
        "flush: {:?}",
        tx.stats()
    );
    let got = sink.lines(FGT);
    assert_eq!(got.len(), 81);
    assert_eq!(
        got[80],
        StoredLine {
            seq: 81,
            line: "after wipe".into()
        }
    );
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_upload_waits_for_the_lab_clock() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut cfg = sender_cfg(&lab, addr, FGT, FGT, dir.path(), 1000);
    // 1-minute upload on a clock running 120× real time: every 0.5 s real.
    cfg.upload = UploadOption::Interval(Duration::from_secs(60));
    cfg.clock = LabClock::starting_now(1_600_000_000_000, 120.0, 0);
    let (tx, _n) = LogSender::start(cfg, stop.clone()).unwrap();
    wait_for("connected", Duration::from_secs(10), || {
        tx.stats().connected
    })
    .await;
    for i in 1..=10u64 {
        tx.send(line(i));
    }
    assert!(tx.flush(Duration::from_secs(10)).await);
    assert_exactly_once(&sink, 10);
    stop.cancel();
    tx.stopped().await;
    // 5-minute upload at real speed: nothing goes out until the interval (or upload_now).
    let stop = CancellationToken::new();
    let mut cfg = sender_cfg(&lab, addr, FGT, FGT, dir.path(), 1000);
    cfg.upload = UploadOption::Interval(Duration::from_secs(300));
    let (tx, _n) = LogSender::start(cfg, stop.clone()).unwrap();
    wait_for("connected", Duration::from_secs(10), || {
        tx.stats().connected
    })
    .await;
    tx.send(line(11));
    assert!(!tx.flush(Duration::from_millis(300)).await);
    assert_eq!(sink.count(FGT), 10);
    tx.upload_now();
    assert!(tx.flush(Duration::from_secs(10)).await);
    assert_exactly_once(&sink, 11);
    stop.cancel();
    recv.kill().await;
}

/// Lines written one at a time under load travel together: batches at least `COALESCE` apart
/// unless `COALESCE_LINES` are waiting, not a batch per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_one_by_one_travel_in_shared_batches() {
    let lab = lab();
    let (sink, recv, tx, stop, _dir) = pair(&lab).await;
    tx.send(line(1));
    assert!(tx.flush(Duration::from_secs(60)).await, "{:?}", tx.stats());
    let before = recv.rx.stats().batches;
    let n = 3000u64;
    let t = std::time::Instant::now();
    for i in 2..=n + 1 {
        tx.send(line(i));
        // Let the sender run between lines, as a device writing logs one by one does.
        tokio::task::yield_now().await;
    }
    assert!(tx.flush(Duration::from_secs(60)).await, "{:?}", tx.stats());
    let elapsed_ms = t.elapsed().as_millis() as u64;
    let batches = recv.rx.stats().batches - before;
    let bound = elapsed_ms / COALESCE.as_millis() as u64 + 2 + n / COALESCE_LINES;
    assert!(
        batches <= bound,
        "{batches} batches for {n} lines in {elapsed_ms} ms (at most {bound})"
    );
    assert_exactly_once(&sink, n + 1);
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_makes_the_queue_spill_within_its_cap_and_loses_nothing() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    sink.set_refusing(true);
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mem_limit = 1_000;
    let (tx, _n) = LogSender::start(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), mem_limit),
        stop.clone(),
    )
    .unwrap();
    // The receiver is there and answers hellos, but refuses every batch (store error).
    wait_for("a refused batch", Duration::from_secs(10), || {
        tx.send(line(tx.stats().next_seq));
        recv.rx.stats().store_errors >= 1
    })
    .await;
    let mut max_mem = 0;
    while tx.stats().next_seq <= 20_000 {
        let i = tx.stats().next_seq;
        assert_eq!(tx.send(line(i)), i);
        if i % 50 == 0 {
            max_mem = max_mem.max(tx.stats().in_memory);
            tokio::task::yield_now().await;
        }
    }
    let total = tx.stats().next_seq - 1;
    let st = tx.stats();
    assert!(
        max_mem <= mem_limit as u64,
        "in memory {max_mem} > {mem_limit}"
    );
    assert!(st.in_memory <= mem_limit as u64, "{st:?}");
    assert!(st.spilled >= total - mem_limit as u64, "{st:?}");
    assert_eq!((st.dropped, st.queue_error.clone()), (0, None));
    // The sender keeps retrying (and the lines stay stored nowhere).
    wait_for("a retried batch", Duration::from_secs(10), || {
        recv.rx.stats().store_errors >= 2
    })
    .await;
    assert_eq!(sink.count(FGT), 0);
    // The receiver recovers: every line arrives, once, in order.
    sink.set_refusing(false);
    assert!(
        tx.flush(Duration::from_secs(60)).await,
        "flush: {:?}",
        tx.stats()
    );
    assert_exactly_once(&sink, total);
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_notifications_reaches_a_slow_consumer_without_loss() {
    let lab = lab();
    let sink = Arc::new(MemorySink::new(true));
    let (recv, addr) = start_receiver(&lab, sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    // A small queue and a consumer that stalls now and then: the burst must wait, not drop.
    let (ntx, mut nrx) = tokio::sync::mpsc::channel(8);
    let tx = LogSender::start_with(
        sender_cfg(&lab, addr, FGT, FGT, dir.path(), 1000),
        ntx,
        stop.clone(),
    )
    .unwrap();
    wait_for("connected", Duration::from_secs(10), || {
        tx.stats().connected
    })
    .await;
    let n = 10_000u64;
    for id in 1..=n {
        recv.rx.notify(
            FGT,
            ioc(
                id,
                &format!("10.{}.{}.{}", id >> 16, (id >> 8) & 255, id & 255),
            ),
        );
    }
    let mut got = Vec::with_capacity(n as usize);
    while (got.len() as u64) < n {
        let note = tokio::time::timeout(Duration::from_secs(30), nrx.recv())
            .await
            .expect("next notification within 30 s")
            .unwrap();
        got.push(note.id);
        if got.len() % 1000 == 0 {
            // While the consumer stalls, nothing beyond the queue is acknowledged.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let acked = sink.acked_notifications().len();
            assert!(
                acked <= got.len() + 8 + 1,
                "{acked} acknowledged but only {} taken",
                got.len()
            );
        }
    }
    assert_eq!(got, (1..=n).collect::<Vec<_>>(), "each once, in order");
    wait_for("all acknowledged", Duration::from_secs(30), || {
        recv.rx.pending_notifications(FGT).is_empty()
    })
    .await;
    assert_eq!(sink.acked_notifications().len() as u64, n);
    stop.cancel();
    tx.stopped().await;
    recv.kill().await;
}
