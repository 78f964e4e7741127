//! Log forwarding: lines written through the FortiGate's LogWriter, forwarded by the log
//! forwarder over the TLS log channel to a local receiver (counting sink), end to end.
//! `cargo bench -p fortilab-fortigate --bench logforward`

/// The allocator of the `sim-fortigate` binary, so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/faz_receiver.rs"]
mod faz_receiver;

use std::time::{Duration, Instant};

use fortilab_core::labnet::LabMap;
use fortilab_fortigate::config::FosVersion;
use fortilab_fortigate::{ConfigSource, DeviceEnv, FortiGateConfig, Listeners};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LINES: u64 = 400_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let (sink, raddr, ca) = faz_receiver::start(&dir.path().join("ca"), stop.clone()).await;
        let mut map = LabMap::new();
        map.add_service(faz_receiver::FAZ_LAB.parse().unwrap(), raddr);
        let opts = FortiGateConfig {
            config: Some(ConfigSource {
                name: "bench.conf".into(),
                text: faz_receiver::FAZ_CLI.into(),
            }),
            name: Some("FGT-BENCH".into()),
            ..FortiGateConfig::new(FosVersion::parse("6.4.4").unwrap())
        };
        let env = DeviceEnv {
            lab_map: map,
            data_dir: Some(dir.path().join("fgt")),
            ..DeviceEnv::with_ca(std::sync::Arc::new(ca), 1, None)
        };
        std::fs::create_dir_all(dir.path().join("fgt")).unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = fortilab_fortigate::start(opts, env, Listeners::api_only(api), stop.clone())
            .await
            .unwrap();
        let dev = running.device.clone();
        let serial = dev.serial.clone();
        // Wait for the connection.
        let t = Instant::now();
        while !running.forwarder.faz_stats().is_some_and(|s| s.connected) {
            assert!(t.elapsed() < Duration::from_secs(20), "no connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let base = sink.count(&serial);
        let start = Instant::now();
        let mut written = 0u64;
        while written < LINES {
            // Bursts of 1000, then a yield so the forwarder's tasks run on this runtime too.
            for _ in 0..1000 {
                dev.logs.event_system("0100032001", "information", "Admin login successful", |record| {
                    record.str("user", "admin").str("ui", "https(10.115.1.100)").str("method", "https")
                        .str("action", "login").str("status", "success")
                        .str("msg", "Administrator admin logged in successfully from https(10.115.1.100)");
                });
            }
            written += 1000;
            tokio::task::yield_now().await;
        }
        let wrote = start.elapsed();
        let t = Instant::now();
        while sink.count(&serial) - base < LINES {
            assert!(t.elapsed() < Duration::from_secs(120), "stalled at {}", sink.count(&serial) - base);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let el = start.elapsed();
        println!(
            "{LINES} lines written in {wrote:?}, all acknowledged after {el:?}: {:.0} lines/s end to end",
            LINES as f64 / el.as_secs_f64()
        );
        let s = running.forwarder.faz_stats().unwrap();
        println!("sender: acked_seq {} queued {} spilled {}", s.acked_seq, s.queued, s.spilled);
        stop.cancel();
        let _ = running.wait().await;
    });
}
