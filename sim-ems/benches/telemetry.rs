//! Cost of one FortiClient telemetry exchange (keep-alive → reply) against an in-process EMS,
//! one client, sequential, over loopback: both sides' CPU is in the figure.
//!
//! - a new TLS connection per exchange with a full handshake (no session cache);
//! - a new TLS connection per exchange resuming the previous TLS session (what the twin's
//!   FortiClient does: the product closes the connection after each exchange);
//! - one connection kept open for all exchanges (for comparison).
//!
//! Run: `cargo bench -p fortilab-ems --bench telemetry`.

/// The allocator every fortilab binary ships with (src/bin/fortilab.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_ems::proto::{self, Frame};
use fortilab_ems::{EmsConfig, Listeners};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn register_frame() -> Frame {
    let mut f = Frame::new(
        "FCTUID",
        "0123456789ABCDEF0123456789ABCDEF",
        "REGISTER",
        "SYSINFO",
    )
    .head("IP", "10.115.2.52")
    .head("MAC", "02-50-56-11-22-33")
    .head("EC_QUARANTINED", 0);
    f.put("HOSTNAME", "PC-52").put("USER", "alice");
    f
}

fn ka_frame() -> Frame {
    let mut f = Frame::new("FCTUID", "0123456789ABCDEF0123456789ABCDEF", "KA", "KA")
        .head("IP", "10.115.2.52")
        .head("MAC", "02-50-56-11-22-33")
        .head("EC_QUARANTINED", 0);
    f.put("HOSTNAME", "PC-52").put("QUARANTINE_ID", 0);
    f
}

async fn one_shot(
    tls: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    frame: &Frame,
) -> (Frame, bool) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = fortilab_core::tls::server_name("10.115.1.30").unwrap();
    let mut s = tls.connect(name, tcp).await.unwrap();
    let resumed = matches!(
        s.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    proto::write_frame(&mut s, frame).await.unwrap();
    let mut buf = Vec::new();
    let reply = proto::read_frame(&mut s, &mut buf).await.unwrap();
    let _ = s.shutdown().await;
    (reply, resumed)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("TELEMETRY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = std::sync::Arc::new(fortilab_core::LabCa::generate("bench").unwrap());
        let cfg = EmsConfig::for_tests();
        let env = fortilab_core::DeviceEnv::with_ca(ca.clone(), 1, Some(dir.path()));
        let sd = tokio_util::sync::CancellationToken::new();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let telemetry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = fortilab_ems::start(cfg, env, Listeners { api, telemetry },
            sd.clone(),
        )
        .await
        .unwrap();
        let addr = running.telemetry_addr;
        let base = fortilab_core::tls::client_config(&ca, None).unwrap();

        let mut full = (*base).clone();
        full.resumption = rustls::client::Resumption::disabled();
        let full = tokio_rustls::TlsConnector::from(Arc::new(full));
        let mut resume = (*base).clone();
        resume.resumption = rustls::client::Resumption::in_memory_sessions(4);
        let resume = tokio_rustls::TlsConnector::from(Arc::new(resume));

        let tls12 = |resumption: rustls::client::Resumption| {
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
            c.resumption = resumption;
            tokio_rustls::TlsConnector::from(Arc::new(c))
        };
        let full12 = tls12(rustls::client::Resumption::disabled());
        let resume12 = tls12(rustls::client::Resumption::in_memory_sessions(4));

        let (r, _) = one_shot(&full, addr, &register_frame()).await;
        assert_eq!(r.value("STATUS"), Some("OK"), "{r:?}");
        let ka = ka_frame();

        for (label, conn) in [
            ("new connection, full TLS handshake", &full),
            ("new connection, resumed TLS session", &resume),
            ("new connection, TLS 1.2 full handshake", &full12),
            ("new connection, TLS 1.2 resumed session", &resume12),
        ] {
            let mut times = Vec::with_capacity(n);
            let mut resumed = 0;
            let t0 = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                let (r, res) = one_shot(conn, addr, &ka).await;
                times.push(t.elapsed());
                assert_eq!(r.value("STATUS"), Some("OK"));
                resumed += usize::from(res);
            }
            let total = t0.elapsed();
            println!(
                "keep-alive exchange, {label}: median {:?}, p95 {:?}, {:.0}/s sequential ({resumed}/{n} resumed)",
                pct(&mut times, 0.5),
                pct(&mut times, 0.95),
                n as f64 / total.as_secs_f64()
            );
        }

        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = fortilab_core::tls::server_name("10.115.1.30").unwrap();
        let mut s = full.connect(name, tcp).await.unwrap();
        let mut buf = Vec::new();
        let mut times = Vec::with_capacity(n);
        let t0 = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            proto::write_frame(&mut s, &ka).await.unwrap();
            let r = proto::read_frame(&mut s, &mut buf).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(r.value("STATUS"), Some("OK"));
        }
        let total = t0.elapsed();
        println!(
            "keep-alive exchange, one connection kept open: median {:?}, p95 {:?}, {:.0}/s sequential",
            pct(&mut times, 0.5),
            pct(&mut times, 0.95),
            n as f64 / total.as_secs_f64()
        );
        sd.cancel();
    });
}
