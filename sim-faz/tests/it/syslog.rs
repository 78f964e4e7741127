//! The syslog input in process: TCP is lossless under a slow store (flow control), UDP drops
//! (ours and the kernel's) are counted, and lines are attributed by the sender's address.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fortilab_core::tls::LabCa;
use fortilab_core::wait::wait_for;
use fortilab_faz::faz::Faz;
use fortilab_faz::syslog::SyslogOptions;
use fortilab_faz::{DeviceEnv, FazConfig, Listeners};
use tokio_util::sync::CancellationToken;

fn traffic(i: u64, devid: &str) -> String {
    format!(
        "<189>date=2021-03-04 time=10:11:{:02} devname=\"FGT-SYS\" devid=\"{devid}\" eventtime={} logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip=10.115.2.{} srcport=5000 dstip=89.1.1.1 dstport=80 action=\"close\" n={i}",
        i % 60,
        1_614_852_000_000_000_000u64 + i,
        i % 250
    )
}

struct Lab {
    faz: Arc<Faz>,
    udp: SocketAddr,
    tcp: SocketAddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// A FortiAnalyzer (auto-authorizing) with its syslog input started by the test: `udp` is the
/// UDP socket to serve (so a test can fill its buffer first), `queue_batches` the ingest queue.
async fn lab(udp: Option<tokio::net::UdpSocket>, queue_batches: usize) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LabCa::generate("t").unwrap());
    let stop = CancellationToken::new();
    let env = DeviceEnv::with_ca(ca.clone(), 1, Some(&dir.path().join("faz")));
    let cfg = FazConfig {
        auto_authorize: true,
        ..FazConfig::default()
    };
    let mut listeners = Listeners::ephemeral().await.unwrap();
    let (u, t) = (
        listeners.syslog_udp.take().unwrap(),
        listeners.syslog_tcp.take().unwrap(),
    );
    let running = fortilab_faz::start(cfg, env, listeners, stop.clone())
        .await
        .unwrap();
    let faz = running.faz.clone();
    let u = udp.unwrap_or(u);
    let (udp, tcp) = (u.local_addr().unwrap(), t.local_addr().unwrap());
    let mut opts = SyslogOptions::new(Duration::from_secs(20));
    opts.queue_batches = queue_batches;
    fortilab_faz::syslog::start_with(faz.clone(), u, t, opts, stop.clone());
    std::mem::forget(running); // stopped through `stop`
    Lab {
        faz,
        udp,
        tcp,
        stop,
        _dir: dir,
    }
}

/// Lines handed to the store (counted before the commit returns).
fn stored(faz: &Faz) -> u64 {
    faz.counters.log_lines.load(Ordering::Relaxed)
}

/// Lines committed.
fn committed(faz: &Faz) -> u64 {
    faz.store.total().unwrap()
}

/// One sender at full speed over one TCP connection, an ingest queue of a single batch (the
/// store is far slower than the socket): every line is stored, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_with_a_slow_store_loses_nothing() {
    let l = lab(None, 1).await;
    // More than any in-memory queue could absorb (the old input dropped past 65,536).
    let n = 150_000u64;
    let tcp = l.tcp;
    let sender = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(tcp).unwrap();
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 1..=n {
            buf.extend_from_slice(traffic(i, "FGVM01TM19000009").as_bytes());
            buf.push(b'\n');
            if buf.len() > 512 * 1024 {
                s.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        s.write_all(&buf).unwrap();
    });
    wait_for("every line stored", Duration::from_secs(120), || {
        committed(&l.faz) >= n
    })
    .await;
    sender.join().unwrap();
    let c = &l.faz.counters;
    assert_eq!(stored(&l.faz), n, "count in == count stored");
    assert_eq!(c.syslog_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(c.syslog_messages.load(Ordering::Relaxed), n);
    assert_eq!(l.faz.store.total().unwrap(), n);
    l.stop.cancel();
}

/// Datagrams sent while nobody reads overflow the socket's buffer: the kernel's drops are
/// counted, and what was received plus what was dropped is what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_kernel_drops_are_counted() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = udp.local_addr().unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = 3000u64;
    for i in 1..=sent {
        let mut m = traffic(i, "FGVM01TM19000009");
        m.push_str(&" pad=\"x\"".repeat(100));
        tx.send_to(m.as_bytes(), target).unwrap();
    }
    let l = lab(Some(udp), fortilab_faz::syslog::QUEUE_BATCHES).await;
    let c = &l.faz.counters;
    wait_for("received + dropped = sent", Duration::from_secs(30), || {
        stored(&l.faz)
            + c.syslog_dropped.load(Ordering::Relaxed)
            + c.syslog_udp_kernel_drops.load(Ordering::Relaxed)
            == sent
    })
    .await;
    let kernel = c.syslog_udp_kernel_drops.load(Ordering::Relaxed);
    assert!(kernel > 0, "the overflow was counted");
    assert!(stored(&l.faz) > 0);
    l.stop.cancel();
}

/// Lines are attributed by the sender's address: from the lab address of a registered device
/// (loopback 127.a.b.c stands for lab 10.a.b.c) they are that device's; from another address
/// they belong to a syslog device of that address, whatever `devid` they claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_is_attributed_by_the_sender_address() {
    let l = lab(None, fortilab_faz::syslog::QUEUE_BATCHES).await;
    let fgt = "FGVM01TM00000001";
    assert!(l.faz.device_hello(
        fgt,
        "FGT-LAB",
        "FortiGate-VM64",
        "6.4.4",
        "fortigate",
        "root",
        "10.115.1.1"
    ));
    // From the FortiGate's lab address.
    let own = std::net::UdpSocket::bind("127.115.1.1:0").unwrap();
    own.send_to(traffic(1, fgt).as_bytes(), l.udp).unwrap();
    // From elsewhere, claiming the FortiGate's serial.
    let other = std::net::UdpSocket::bind("127.0.0.9:0").unwrap();
    for i in 2..=4 {
        other.send_to(traffic(i, fgt).as_bytes(), l.udp).unwrap();
    }
    wait_for("four lines stored", Duration::from_secs(20), || {
        committed(&l.faz) >= 4
    })
    .await;
    let fake = "SYSLOG-7F000009";
    let d = l.faz.device(fake).expect("a syslog device for the address");
    assert_eq!((d.ip.as_str(), d.via.as_str()), ("127.0.0.9", "syslog"));
    assert_eq!(
        l.faz.store.seq_stats(fgt).unwrap().0,
        1,
        "only its own line"
    );
    assert_eq!(l.faz.store.seq_stats(fake).unwrap().0, 3);
    l.stop.cancel();
}
