//! Proxied HTTP through the FortiGate data plane (policy + web filter monitor-all + traffic and
//! web filter logs) with 100 concurrent keep-alive clients, against an in-process origin; the
//! same clients straight to the origin give the baseline for the added latency.
//!
//! Two phases, each run direct to the origin and through the FortiGate:
//! - saturation: every client sends its next request as soon as the previous answer is in
//!   (closed loop); gives the maximum request rate. Its latency is mostly queueing (Little's
//!   law: 100 clients / rate), so it is printed but is not the added-latency figure.
//! - paced: the 100 clients together send `PROXY_BENCH_RATE` requests/s (default 20,000, the
//!   target rate) on a fixed schedule, wrk2-style; a request that could not be sent on time
//!   because the previous answer was late is timed from when it should have been sent
//!   (coordinated omission corrected). Added latency = paced through the FortiGate − paced direct,
//!   per round and over all rounds' requests pooled.
//!
//! `PROXY_BENCH_FAZ=1` also forwards every log to a FortiAnalyzer stand-in over the TLS log
//! channel (the lab's set-up) and checks at the end that all arrived.
//!
//! `cargo bench -p fortilab-fortigate --bench proxy`

#[path = "support/faz_receiver.rs"]
mod faz_receiver;
#[path = "support/origin.rs"]
mod lab_origin;

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fortilab_core::labnet::LabMap;
use fortilab_core::proxy::{encode_v2, ProxyHeader};
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::{ConfigSource, DeviceEnv, FortiGateConfig, Listeners};
use lab_origin::origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 100;
const SECS: u64 = 4;
/// Requests per client not timed: the first opens the client's connection and its upstream
/// session (policy lookup, NAT port, upstream connect).
const WARMUP: usize = 10;

const CONFIG: &str = r#"
config system interface
    edit "port1"
        set ip 10.115.1.1 255.255.255.0
        set role wan
    next
    edit "port3"
        set ip 10.115.2.1 255.255.255.0
        set role lan
    next
end
config firewall policy
    edit 1
        set srcintf "port3"
        set dstintf "virtual-wan-link"
        set srcaddr "all"
        set dstaddr "all"
        set action accept
        set schedule "always"
        set service "ALL"
        set utm-status enable
        set ssl-ssh-profile "certificate-inspection"
        set webfilter-profile "monitor-all"
        set logtraffic all
        set nat enable
    next
end
"#;

/// One keep-alive client: requests until `until`, returns latencies (µs). With `every`, the
/// client sends on a fixed schedule (first request at `offset`), else back to back.
async fn client(
    addr: SocketAddr,
    src: SocketAddr,
    req: Vec<u8>,
    until: Instant,
    pace: Option<(Duration, Duration)>,
) -> Vec<u32> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&encode_v2(&ProxyHeader {
        src,
        dst: "10.115.2.1:8080".parse().unwrap(),
    }))
    .await
    .unwrap();
    let mut lat = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    let begin = Instant::now();
    let mut k: u32 = 0;
    let mut n = 0usize;
    while Instant::now() < until {
        let t = match pace {
            None => Instant::now(),
            Some((every, offset)) => {
                let due = begin + offset + every * k;
                k += 1;
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                    // On time: timed from the actual send (the timer's own lateness is not the
                    // server's).
                    Instant::now()
                } else {
                    // Late because the previous answer was: timed from when it was due.
                    due
                }
            }
        };
        s.write_all(&req).await.unwrap();
        // Read one response (Content-Length framing).
        loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= p + 4 + len {
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    buf.drain(..p + 4 + len);
                    break;
                }
            }
            let n = s.read(&mut tmp).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&tmp[..n]);
        }
        n += 1;
        if n > WARMUP {
            lat.push(t.elapsed().as_micros() as u32);
        }
    }
    lat
}

async fn run(addr: SocketAddr, req: &[u8], rate: Option<f64>) -> (f64, Vec<u32>) {
    let until = Instant::now() + Duration::from_secs(SECS);
    // Each client's share of the rate, the clients' schedules spread over one period.
    let every = rate.map(|r| Duration::from_secs_f64(CLIENTS as f64 / r));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let src: SocketAddr = format!("10.115.2.{}:{}", 10 + i % 200, 40000 + i)
            .parse()
            .unwrap();
        let pace = every.map(|e| (e, e * i as u32 / CLIENTS as u32));
        tasks.push(tokio::spawn(client(addr, src, req.to_vec(), until, pace)));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let el = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len() as f64 / el, all)
}

fn pct(v: &[u32], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
}

fn main() {
    // One runtime for the clients, the origin and the FortiGate: with separate runtimes (as
    // separate processes would have) the six worker threads contend for the two cores and
    // every figure is worse, for the direct baseline too.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ol = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let oaddr = ol.local_addr().unwrap();
        tokio::spawn(origin(ol));
        let mut map = LabMap::new();
        map.add_service("89.207.200.14:80".parse().unwrap(), oaddr);
        let shutdown = CancellationToken::new();
        // PROXY_BENCH_FAZ=1: also forward every log to a local FortiAnalyzer stand-in over the
        // TLS log channel, as the lab does.
        let with_faz = std::env::var("PROXY_BENCH_FAZ").is_ok_and(|v| v == "1");
        let dir = tempfile::tempdir().unwrap();
        let (faz, ca, config) = if with_faz {
            let (sink, raddr, ca) =
                faz_receiver::start(&dir.path().join("ca"), shutdown.clone()).await;
            map.add_service(faz_receiver::FAZ_LAB.parse().unwrap(), raddr);
            (Some(sink), ca, format!("{CONFIG}{}", faz_receiver::FAZ_CLI))
        } else {
            let ca = fortilab_core::tls::LabCa::generate("bench").unwrap();
            (None, ca, CONFIG.to_string())
        };
        let opts = FortiGateConfig {
            config: Some(ConfigSource {
                name: "bench.conf".into(),
                text: config,
            }),
            name: Some("FGT-BENCH".into()),
            ..FortiGateConfig::new(FosVersion::parse("6.4.4").unwrap())
        };
        let env = DeviceEnv {
            lab_map: map,
            data_dir: with_faz.then(|| dir.path().to_path_buf()),
            ..DeviceEnv::with_ca(std::sync::Arc::new(ca), 1, None)
        };
        let listeners = Listeners {
            proxy: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            ..Listeners::api_only(TcpListener::bind("127.0.0.1:0").await.unwrap())
        };
        let running = fortilab_fortigate::start(opts, env, listeners, shutdown.clone())
            .await
            .unwrap();
        if with_faz {
            let t = Instant::now();
            while !running.forwarder.faz_stats().is_some_and(|s| s.connected) {
                assert!(t.elapsed() < Duration::from_secs(20), "no FortiAnalyzer connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let paddr = running.proxy_addr.expect("proxy listener");
        let dev = running.device.clone();

        let direct_req = b"GET / HTTP/1.1\r\nHost: 89.207.200.14\r\n\r\n".to_vec();
        let proxy_req =
            b"GET http://89.207.200.14/ HTTP/1.1\r\nHost: 89.207.200.14\r\n\r\n".to_vec();
        let rate: f64 = std::env::var("PROXY_BENCH_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000.0);
        let rounds: usize = std::env::var("PROXY_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        println!(
            "{CLIENTS} keep-alive clients, {SECS} s a phase, 2 worker threads, first {WARMUP} requests of each client not timed"
        );
        let mut added_p99 = Vec::new();
        let (mut pooled_direct, mut pooled_proxy) = (Vec::new(), Vec::new());
        let phases = std::iter::once(None).chain(std::iter::repeat_n(Some(rate), rounds));
        for (round, pace) in phases.enumerate() {
            let (d_rps, d_lat) = run(oaddr, &direct_req, pace).await;
            let logs_before = dev.logs.last_seq();
            let (p_rps, p_lat) = run(paddr, &proxy_req, pace).await;
            let logs_after = dev.logs.last_seq();
            match pace {
                None => println!("saturation: every client back to back"),
                Some(r) => println!("paced round {round}: {r:.0} req/s offered on a fixed schedule"),
            }
            println!(
                "  direct to origin : {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms",
                d_rps,
                pct(&d_lat, 0.5),
                pct(&d_lat, 0.99),
                pct(&d_lat, 0.999)
            );
            println!(
                "  through FortiGate: {:>8.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({} logs written)",
                p_rps,
                pct(&p_lat, 0.5),
                pct(&p_lat, 0.99),
                pct(&p_lat, 0.999),
                logs_after - logs_before
            );
            let added = pct(&p_lat, 0.99) - pct(&d_lat, 0.99);
            println!(
                "  added latency: p50 {:.3} ms, p99 {:.3} ms{}",
                pct(&p_lat, 0.5) - pct(&d_lat, 0.5),
                added,
                if pace.is_some() {
                    " (target: p99 < 2 ms at 20,000 req/s)"
                } else {
                    " (queueing at saturation: clients / rate)"
                }
            );
            if pace.is_some() {
                added_p99.push(added);
                pooled_direct.extend_from_slice(&d_lat);
                pooled_proxy.extend_from_slice(&p_lat);
            }
        }
        if !added_p99.is_empty() {
            let mut sorted = added_p99.clone();
            sorted.sort_by(f64::total_cmp);
            println!(
                "paced added p99 over {} rounds: {}; median {:.3} ms, worst {:.3} ms (target < 2 ms)",
                sorted.len(),
                added_p99
                    .iter()
                    .map(|v| format!("{v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            );
            // Every timed request of every paced round together: the p99 of the whole run.
            pooled_direct.sort_unstable();
            pooled_proxy.sort_unstable();
            println!(
                "all paced rounds pooled ({} requests through the FortiGate): p99 direct {:.3} ms, through {:.3} ms; added p99 {:.3} ms (target < 2 ms)",
                pooled_proxy.len(),
                pct(&pooled_direct, 0.99),
                pct(&pooled_proxy, 0.99),
                pct(&pooled_proxy, 0.99) - pct(&pooled_direct, 0.99)
            );
        }
        if let Some(sink) = &faz {
            // Every log written must reach the FortiAnalyzer stand-in.
            let written = dev.logs.last_seq();
            let t = Instant::now();
            while sink.count(&dev.serial) < written {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "forwarding stalled at {} of {written}",
                    sink.count(&dev.serial)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!(
                "forwarded to the FortiAnalyzer stand-in: all {written} logs ({:.1} s after the last round)",
                t.elapsed().as_secs_f64()
            );
        }
        shutdown.cancel();
        let _ = Arc::strong_count(&dev);
        let _ = running.wait().await;
    });
}
