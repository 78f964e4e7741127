//! Log channel throughput: one sender → one local receiver over TLS, with a sink that only
//! counts. `cargo bench -p fortilab-core --bench logchan`
//!
//! Reports lines/s for ~400-byte FortiOS web-filter lines (target ≥ 200,000 lines/s), in real
//! time mode, end to end (queued → acknowledged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_core::clock::LabClock;
use fortilab_core::logchan::{
    Hello, LogReceiver, LogSender, MemorySink, SenderConfig, UploadOption, ALPN,
};
use fortilab_core::tls::{self, ClientAuth, LabCa};
use tokio_util::sync::CancellationToken;

const SERIAL: &str = "FGVM01TM20000001";

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

fn line(i: u64) -> String {
    let l = format!(
        "date=2021-03-04 time=10:11:{:02} devname=\"FGT-LAB\" devid=\"{SERIAL}\" eventtime={} logid=\"0317013312\" type=\"utm\" subtype=\"webfilter\" eventtype=\"ftgd_allow\" level=\"notice\" vd=\"root\" policyid=1 sessionid={i} srcip=10.115.2.52 srcport=51000 dstip=89.238.73.97 dstport=80 proto=6 service=\"HTTP\" hostname=\"www.eicar.org\" profile=\"monitor-all\" action=\"passthrough\" url=\"/download/eicar.com\" sentbyte=84 rcvdbyte=0 cat=50 catdesc=\"Information and Computer Security\"",
        i % 60,
        1_614_881_482_000_000_000u64 + i
    );
    l
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let ca = LabCa::generate("bench").unwrap();
    let faz_cert = ca.issue("FAZ-VM0000000001", &[]).unwrap();
    let server_tls = tls::server_config(&ca, &faz_cert, ClientAuth::Required, &[ALPN]).unwrap();
    let sink = Arc::new(MemorySink::counting());
    let rx = LogReceiver::new(sink.clone(), hello("FAZ-VM0000000001"), LabClock::real());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (r2, s2) = (rx.clone(), stop.clone());
    let server = tokio::spawn(async move { r2.serve(listener, server_tls, s2).await });

    let id = ca.issue(SERIAL, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = SenderConfig {
        server: addr,
        server_name: "localhost".into(),
        tls: tls::client_config(&ca, Some(&id)).unwrap(),
        hello: hello(SERIAL),
        queue_dir: dir.path().to_path_buf(),
        mem_limit: 200_000,
        upload: UploadOption::Realtime,
        clock: LabClock::real(),
        reconnect_delay: Duration::from_millis(20),
    };
    let (tx, _notes) = LogSender::start(cfg, stop.clone()).unwrap();
    let sample = line(1);
    println!("line size: {} bytes", sample.len());

    // Warm-up.
    for i in 0..20_000 {
        tx.send(line(i));
    }
    assert!(tx.flush(Duration::from_secs(60)).await);

    for &n in &[200_000u64, 500_000] {
        let lines: Vec<String> = (0..n).map(line).collect();
        let before = sink.count(SERIAL);
        let t = Instant::now();
        // Keep the queue in memory: send in slices of 50,000 and let the channel drain
        // (a FortiGate produces lines over time; this is the sustained rate).
        for chunk in lines.chunks(50_000) {
            for l in chunk {
                tx.send(l.clone());
            }
            while tx.stats().in_memory > 150_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert!(tx.flush(Duration::from_secs(120)).await, "{:?}", tx.stats());
        let el = t.elapsed();
        let stored = sink.count(SERIAL) - before;
        assert_eq!(stored, n);
        println!(
            "logchan realtime: {n} lines in {:.3} s = {:.0} lines/s ({:.1} MB/s), spilled now {}",
            el.as_secs_f64(),
            n as f64 / el.as_secs_f64(),
            (n as f64 * sample.len() as f64) / el.as_secs_f64() / 1e6,
            tx.stats().spilled
        );
    }

    stop.cancel();
    tx.stopped().await;
    let _ = server.await;

    // Spill path: 300,000 lines queued while the receiver is away (memory limit 10,000, the
    // rest in segment files), then drained from disk once it is back.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let id = ca.issue(SERIAL, &[]).unwrap();
    let stop = CancellationToken::new();
    let cfg = SenderConfig {
        server: addr,
        server_name: "localhost".into(),
        tls: tls::client_config(&ca, Some(&id)).unwrap(),
        hello: hello(SERIAL),
        queue_dir: dir.path().to_path_buf(),
        mem_limit: 10_000,
        upload: UploadOption::Realtime,
        clock: LabClock::real(),
        reconnect_delay: Duration::from_millis(50),
    };
    let (tx, _notes) = LogSender::start(cfg, stop.clone()).unwrap();
    let n = 300_000u64;
    let t = Instant::now();
    for i in 0..n {
        tx.send(line(i));
    }
    let el = t.elapsed();
    let st = tx.stats();
    println!(
        "logchan spill: queued {n} lines in {:.3} s = {:.0} lines/s while away (in memory {}, spilled {})",
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64(),
        st.in_memory,
        st.spilled
    );
    let sink = Arc::new(MemorySink::counting());
    let rx = LogReceiver::new(sink.clone(), hello("FAZ-VM0000000001"), LabClock::real());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let faz_cert = ca.issue("FAZ-VM0000000001", &[]).unwrap();
    let server_tls = tls::server_config(&ca, &faz_cert, ClientAuth::Required, &[ALPN]).unwrap();
    let stop2 = CancellationToken::new();
    let (r2, s2) = (rx.clone(), stop2.clone());
    let t = Instant::now();
    let server = tokio::spawn(async move { r2.serve(listener, server_tls, s2).await });
    assert!(tx.flush(Duration::from_secs(120)).await, "{:?}", tx.stats());
    let el = t.elapsed();
    assert_eq!(sink.count(SERIAL), n);
    println!(
        "logchan spill: drained {n} lines in {:.3} s = {:.0} lines/s (reconnect included)",
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64()
    );
    stop.cancel();
    tx.stopped().await;
    stop2.cancel();
    let _ = server.await;
}
