//! A burst of 10,000 compromised hosts from FortiAnalyzer to the FortiGate, end to end: a
//! local log-channel receiver standing for FortiAnalyzer queues one IOC notification per host
//! (`LogReceiver::notify`, as FortiAnalyzer's IOC engine does), the FortiGate (started whole,
//! forwarding to it over the lab-CA TLS log channel) receives them, acknowledges each once it
//! is in the automation engine's bounded queue, and runs the Compromised Host Quarantine
//! stitch (ban-ip + alert) for each. Prints how many were evaluated (must be all) and the
//! latency from notification to the stitch run's `stitch.done` event (p50, p99, max).
//!
//! `cargo bench -p fortilab-fortigate --bench notify_burst` (`FGT_BENCH_N` hosts, default
//! 10,000).

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/faz_receiver.rs"]
mod faz_receiver;
#[path = "support/stitch.rs"]
mod stitch;

use std::time::{Duration, Instant};

use fortilab_core::labnet::LabMap;
use fortilab_core::logchan::{Notice, Notification};
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::{ConfigSource, FortiGateConfig, Listeners};
use serde_json::json;
use stitch::{pct, IOC_STITCH_CLI};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() {
    let n = std::env::var("FGT_BENCH_N")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let (faz, running) = rt.block_on(async {
        let (_sink, raddr, ca, faz) =
            faz_receiver::start_receiver(&dir.path().join("ca"), stop.clone()).await;
        let mut map = LabMap::new();
        map.add_service(faz_receiver::FAZ_LAB.parse().unwrap(), raddr);
        let opts = FortiGateConfig {
            config: Some(ConfigSource {
                name: "bench.conf".into(),
                text: format!("{}{IOC_STITCH_CLI}", faz_receiver::FAZ_CLI),
            }),
            name: Some("FGT-BENCH".into()),
            ..FortiGateConfig::new(FosVersion::parse("6.4.4").unwrap())
        };
        let env = fortilab_core::DeviceEnv {
            lab_map: map,
            ..fortilab_core::DeviceEnv::with_ca(
                std::sync::Arc::new(ca),
                1,
                Some(&dir.path().join("fgt")),
            )
        };
        std::fs::create_dir_all(dir.path().join("fgt")).unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = fortilab_fortigate::start(opts, env, Listeners::api_only(api), stop.clone())
            .await
            .unwrap();
        let t = Instant::now();
        while !running.forwarder.faz_stats().is_some_and(|s| s.connected) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no log channel connection"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (faz, running)
    });
    let dev = running.device.clone();
    let engine = running.automation.clone();
    let serial = dev.serial.clone();
    let (_, _, mut done_rx) = dev.events.subscribe_since(dev.events.last_seq());
    // Completions are collected on their own thread as they happen (runs are numbered in the
    // order the notifications arrive: one connection keeps the order).
    let collector = std::thread::spawn(move || {
        let mut done: Vec<(u64, Instant)> = Vec::with_capacity(n);
        let mut lagged = 0u64;
        while done.len() + (lagged as usize) < n {
            match done_rx.blocking_recv() {
                Ok(e) if e.kind == "stitch.done" => {
                    done.push((e.data["run"].as_u64().unwrap_or(0), Instant::now()));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => lagged += k,
                Err(_) => break,
            }
        }
        (done, lagged)
    });
    let evaluated0 = engine.ioc_evaluated();
    let wall = Instant::now();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let ip = format!("10.{}.{}.{}", 150 + i / 65536, (i / 256) % 256, i % 256);
        let notice: Notice = serde_json::from_value(json!({"type": "ioc",
            "verdict": "Infected", "ioc_level": "high", "srcip": ip,
            "threat": "www.eicar.org", "epid": i}))
        .unwrap();
        faz.notify(&serial, Notification::new(1 + i as u64, notice));
        sent.push(Instant::now());
    }
    let queued_in = wall.elapsed();
    let t = Instant::now();
    while engine.ioc_evaluated() - evaluated0 < n as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "only {} of {n} evaluated",
            engine.ioc_evaluated() - evaluated0
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let total = wall.elapsed();
    let (done, lagged) = collector.join().unwrap();
    let first = done.iter().map(|d| d.0).min().unwrap_or(1);
    let mut lat: Vec<Duration> = done
        .iter()
        .filter_map(|(run, at)| {
            sent.get((run - first) as usize)
                .map(|s| at.saturating_duration_since(*s))
        })
        .collect();
    let evaluated = engine.ioc_evaluated() - evaluated0;
    println!(
        "burst of {n} compromised hosts FortiAnalyzer -> FortiGate over the log channel: {evaluated} evaluated, {} banned in {total:?} ({:.0}/s; notifications queued at the receiver in {queued_in:?}); notification -> stitch done: p50={:?} p99={:?} max={:?} ({} runs timed, {lagged} events lagged); acked by the FortiGate: {}",
        dev.banned.list().len(),
        n as f64 / total.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        lat.len(),
        faz.stats().notifications_acked,
    );
    assert_eq!(evaluated, n as u64, "every notification evaluated");
    stop.cancel();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), running.wait()).await;
    });
}
